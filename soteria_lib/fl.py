"""Federated averaging (McMahan et al., AISTATS 2017) with a defense on every local step.

Each round the server samples ``m = max(1, round(C K))`` of the K clients; each one starts
from the global weights and runs E epochs of minibatch SGD on its own data,

    w <- w - eta * D(g),     g = grad of the mean cross-entropy on a batch of B examples,

where D is the client's defense (Soteria, pruning, noise, or the identity): the defended
gradient is what forms the update that leaves the client. The server replaces the global
weights by the average of the returned weights, weighted by the clients' sample counts n_k:

    w_{t+1} = sum_k n_k w_k / sum_k n_k.

Every random draw (split, client sampling, batch order) comes from the run's seed and the
round number, so a run resumed from its checkpoint continues exactly as it would have.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .files import write_atomic
from .threat import Defense, loss_gradients


@dataclass(frozen=True)
class FedAvgConfig:
    clients: int = 10
    fraction: float = 0.5
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    iid: bool = True
    alpha: float = 0.5
    seed: int = 0

    def __post_init__(self):
        checks = [
            (self.clients >= 1, f"clients must be >= 1, got {self.clients}"),
            (0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}"),
            (self.rounds >= 0, f"rounds must be >= 0, got {self.rounds}"),
            (self.local_epochs >= 1, f"local_epochs must be >= 1, got {self.local_epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.alpha > 0, f"alpha must be > 0, got {self.alpha}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def split_iid(num_examples: int, clients: int, seed: int) -> list[torch.Tensor]:
    """A random partition into ``clients`` parts of (almost) equal size."""
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))
    return list(torch.tensor_split(order, clients))


def split_dirichlet(labels: torch.Tensor, clients: int, alpha: float, seed: int) -> list[torch.Tensor]:
    """Label-skewed partition: each class's examples are divided among the clients in
    proportions drawn from Dirichlet(alpha); small alpha gives clients few classes."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    parts: list[list[int]] = [[] for _ in range(clients)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(clients, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
        for k, chunk in enumerate(np.split(members, cuts)):
            parts[k].extend(chunk.tolist())
    return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]


def _round_seed(seed: int, round_index: int) -> int:
    return (seed * 1_000_003 + round_index * 7_919) % 2**63


def local_sgd(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, config: FedAvgConfig,
              defense: Defense | None, generator: torch.Generator) -> nn.Module:
    """E epochs of minibatch SGD on one client's data, each gradient passed through the defense."""
    params = list(model.parameters())
    for _ in range(config.local_epochs):
        order = torch.randperm(len(labels), generator=generator).to(inputs.device)
        for batch in torch.split(order, config.batch_size):
            x, y = inputs[batch], labels[batch]
            model.train()
            grads = loss_gradients(model, x, y)
            if defense is not None:
                grads = defense(model, x, y, grads)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(config.lr * g)
    return model


def average_states(states: list[dict], weights: list[float]) -> dict:
    """Weighted average of floating-point entries; integer buffers are taken from the first."""
    total = float(sum(weights))
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(s[key] * (w / total) for s, w in zip(states, weights))
        else:
            out[key] = first.clone()
    return out


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> dict:
    model.eval()
    correct, loss = 0, 0.0
    for x, y in zip(torch.split(inputs, batch_size), torch.split(labels, batch_size)):
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return {"accuracy": correct / len(labels), "loss": loss / len(labels)}


def run_fedavg(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
               config: FedAvgConfig, defense: Defense | None = None, checkpoint: str | Path | None = None,
               progress: bool = True, on_round: Callable[[dict], None] | None = None,
               run_tag: dict | None = None) -> list[dict]:
    """Train ``model`` in place with FedAvg; returns one record per round (round 0 = initial model).

    ``train`` and ``test`` are ``(inputs, labels)`` tensors on the model's device. With
    ``checkpoint``, the state is saved after every round and resumed when it was written for the
    same ``config`` and ``run_tag`` (whatever else identifies the run: data, model, defense).
    """
    inputs, labels = train
    if config.iid:
        parts = split_iid(len(labels), config.clients, config.seed)
    else:
        parts = split_dirichlet(labels.cpu(), config.clients, config.alpha, config.seed)
    history = [{"round": 0, **evaluate(model, *test), "seconds": 0.0}]
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        if saved["config"] != asdict(config) or saved.get("run_tag") != run_tag:
            raise ValueError(f"checkpoint {checkpoint} was written for another configuration; "
                             "remove it or choose another output folder")
        model.load_state_dict(saved["model"])
        history = saved["history"]
    per_round = max(1, round(config.fraction * config.clients))
    bar = tqdm(range(len(history), config.rounds + 1), desc="FedAvg", disable=not progress,
               initial=len(history) - 1, total=config.rounds)
    for t in bar:
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(_round_seed(config.seed, t))
        chosen = torch.randperm(config.clients, generator=generator)[:per_round].tolist()
        states, weights = [], []
        for k in chosen:
            if len(parts[k]) == 0:
                continue
            local = copy.deepcopy(model)
            index = parts[k].to(inputs.device)
            local_sgd(local, inputs[index], labels[index], config, defense, generator)
            states.append(local.state_dict())
            weights.append(len(parts[k]))
        if states:
            model.load_state_dict(average_states(states, weights))
        record = {"round": t, **evaluate(model, *test), "seconds": time.perf_counter() - start}
        history.append(record)
        bar.set_postfix(acc=f"{record['accuracy']:.3f}")
        if on_round:
            on_round(record)
        if checkpoint:
            state = {"config": asdict(config), "run_tag": run_tag, "model": model.state_dict(), "history": history}
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(checkpoint, lambda tmp: torch.save(state, tmp))
    bar.close()
    return history
