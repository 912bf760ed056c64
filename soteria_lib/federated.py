"""Federated averaging (McMahan et al., AISTATS 2017) with a defense on every local step (chapter 6).

Each round the server samples ``m = max(1, round(C K))`` of the K clients; each one starts
from the global weights and runs E epochs of minibatch SGD on its own data,

    w <- w - eta * D(g),     g = grad of the mean cross-entropy on a batch of B examples,

where D is the client's defense (Soteria, pruning, noise, or the identity): the defended
gradient is what forms the update that leaves the client. The server replaces the global
weights by the average of the returned weights, weighted by the clients' sample counts n_k:

    w_{t+1} = sum_k n_k w_k / sum_k n_k.

Every client step goes through the client contract of the threat model,
:func:`~soteria_lib.threat.share_update`: the update that leaves the client is the one an attacker
would see. Every random draw (split, client sampling, batch order) comes from the run's seed and
the round number, so a run resumed from its checkpoint continues exactly as it would have.

:func:`run_experiment` is the whole accuracy experiment (data, model, defense, training,
``metrics.json``), used by ``python -m soteria_lib.fedavg``, the sweep and notebook 06.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .data import Normalization, dataset_info, load_dataset
from .defenses import DEFENSES, Defense, DefenseSetting
from .files import Writer, json_writer, write_atomic, write_together
from .limits import check_count
from .models import MODELS, get_model
from .plotting import plot_accuracy
from .runtime import check_seed, resolve_device, seed_everything, where_it_ran
from .scales import get_scale
from .threat import PrivateBatch, share_update

# Trained models start from PyTorch's initialisation (DLG's uniform one is for attacks), and the
# LeNet uses ReLU: its four sigmoids barely move in a teaching-scale budget of SGD steps.
TRAINING_OPTIONS = {"lenet": {"init": "default", "activation": "relu"}}


@dataclass(frozen=True)
class FedAvgConfig:
    """The training schedule. The defaults (10 clients, 3 per round, one epoch of SGD with batch 8
    and learning rate 0.1, 5 rounds) bring the ReLU LeNet to about 91 % on MNIST at teaching scale."""

    clients: int = 10
    fraction: float = 0.3
    rounds: int = 5
    local_epochs: int = 1
    batch_size: int = 8
    lr: float = 0.1
    iid: bool = True
    alpha: float = 0.5
    seed: int = 0

    def __post_init__(self):
        for name in ("clients", "rounds", "local_epochs", "batch_size"):
            check_count(name, getattr(self, name))  # within soteria_lib.limits, whose bounds say why
        for name, ok, rule in (("fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
                               ("lr", lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
                               ("alpha", lambda v: math.isfinite(v) and v > 0, "a finite number > 0")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ValueError(f"{name} must be {rule}, got {value!r}")
        check_seed(self.seed)


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
              defense: Defense | None, generator: torch.Generator,
              normalization: Normalization | None = None) -> nn.Module:
    """E epochs of minibatch SGD on one client's data; every step applies the update the client
    shares (:func:`~soteria_lib.threat.share_update`, the defended gradient)."""
    params = list(model.parameters())
    normalization = normalization or Normalization.identity(inputs.shape[1])
    for _ in range(config.local_epochs):
        order = torch.randperm(len(labels), generator=generator).to(inputs.device)
        for batch in torch.split(order, config.batch_size):
            model.train()
            update = share_update(model, PrivateBatch(inputs[batch], labels[batch]), normalization, defense)
            with torch.no_grad():
                for p, g in zip(params, update.gradients):
                    p.sub_(config.lr * g)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> dict:
    model.eval()
    correct, loss = 0, 0.0
    for x, y in zip(torch.split(inputs, batch_size), torch.split(labels, batch_size)):
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return {"accuracy": correct / len(labels), "loss": loss / len(labels)}


CHECKPOINT_KEYS = {"config", "run_tag", "model", "history"}


def checkpoint_writer(state: dict) -> Writer:
    """A writer of ``state`` as a torch checkpoint. It is serialised in memory first and written
    with one plain file write, so a full disk is an ``OSError`` naming the file (torch's own
    writer reports it as an ``enforce fail`` in C++)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return lambda tmp: Path(tmp).write_bytes(data)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`run_fedavg`, loaded with ``weights_only=True`` (tensors and
    plain data only); a damaged or foreign file is a one-line ``ValueError`` naming it."""
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, empty or foreign files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {path} cannot be read ({detail[:120]}); remove it to start afresh") from None
    if not isinstance(saved, dict) or set(saved) != CHECKPOINT_KEYS:
        raise ValueError(f"checkpoint {path} was not written by FedAvg; remove it or choose another output folder")
    return saved


class FedAvgDiverged(FloatingPointError):
    """Training diverged in ``round`` (a non-finite gradient or test loss); ``history`` holds the
    rounds before it, the last of them the final finite global model."""

    def __init__(self, round: int, history: list[dict], reason: str):  # noqa: A002 (FedAvg's word)
        super().__init__(f"FedAvg diverged in round {round}: {reason}; lower the learning rate")
        self.round, self.history = round, history


def client_parts(labels: torch.Tensor, config: FedAvgConfig) -> list[torch.Tensor]:
    """The indices of each client's examples: the IID or Dirichlet split of ``config``."""
    if config.iid:
        return split_iid(len(labels), config.clients, config.seed)
    return split_dirichlet(labels.cpu(), config.clients, config.alpha, config.seed)


def privacy_budget(experiment: "FedAvgExperiment", labels: torch.Tensor) -> dict | None:
    """(epsilon, delta) of the federation's worst client, from the accountant of a defense that
    registers one (DP-SGD, :mod:`.privacy`), each client charged for the rounds it joins; None for
    any other defense, which has no finite epsilon."""
    setting = experiment.setting()
    if setting.info.accountant is None:
        return None
    training = experiment.training
    sizes = [len(part) for part in client_parts(labels, training)]
    joined = [0] * training.clients
    for t in range(1, training.rounds + 1):
        for k, _ in round_plan(training, t, sizes):
            joined[k] += 1
    return asdict(setting.info.accountant(experiment.build_defense(), sizes, joined, training))


def round_plan(config: FedAvgConfig, round_index: int, sizes: list[int]) -> list[tuple[int, torch.Tensor]]:
    """The clients that train in round ``round_index``, in order, each with the generator that
    orders its batches.

    One stream, seeded by the run's seed and the round, first samples ``max(1, round(C K))``
    clients, then orders each one's batches in turn (clients without examples are skipped).
    Each client gets that stream as it stands when the client starts, so a client that trains
    elsewhere (a Flower node, :mod:`soteria_lib.flower`) draws exactly what it draws here."""
    stream = torch.Generator().manual_seed(_round_seed(config.seed, round_index))
    per_round = max(1, round(config.fraction * config.clients))
    plan = []
    for k in torch.randperm(config.clients, generator=stream)[:per_round].tolist():
        if sizes[k] == 0:
            continue
        plan.append((k, torch.Generator().set_state(stream.get_state())))
        for _ in range(config.local_epochs):  # the draws local_sgd makes
            torch.randperm(sizes[k], generator=stream)
    return plan


def run_fedavg(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
               config: FedAvgConfig, defense: Defense | None = None, checkpoint: str | Path | None = None,
               progress: bool = True, on_round: Callable[[dict], None] | None = None,
               run_tag: dict | None = None, normalization: Normalization | None = None) -> list[dict]:
    """Train ``model`` in place with FedAvg; returns one record per round (round 0 = initial model).

    ``train`` and ``test`` are ``(inputs, labels)`` tensors on the model's device. With
    ``checkpoint``, the state is saved after every round and resumed when it was written for the
    same ``config`` and ``run_tag`` (whatever else identifies the run: data, model, defense).
    """
    inputs, labels = train
    defense = defense if defense is not None else DEFENSES["none"].builder()
    parts = client_parts(labels, config)
    history = [{"round": 0, **evaluate(model, *test), "seconds": 0.0}]
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and checkpoint.exists():
        saved = load_checkpoint(checkpoint)
        if saved["config"] != asdict(config) or saved.get("run_tag") != run_tag:
            raise ValueError(f"checkpoint {checkpoint} was written for another configuration or data; "
                             "remove it or choose another output folder")
        model.load_state_dict(saved["model"])
        history = saved["history"]
    sizes = [len(part) for part in parts]
    bar = tqdm(range(len(history), config.rounds + 1), desc="FedAvg", disable=not progress,
               initial=len(history) - 1, total=config.rounds)
    for t in bar:
        start = time.perf_counter()
        states, weights = [], []
        for k, generator in round_plan(config, t, sizes):
            local = copy.deepcopy(model)
            index = parts[k].to(inputs.device)
            try:
                local_sgd(local, inputs[index], labels[index], config, defense, generator, normalization)
            except FloatingPointError as exc:
                bar.close()
                raise FedAvgDiverged(t, history, f"client {k}: {exc}") from exc
            states.append(local.state_dict())
            weights.append(len(parts[k]))
        if states:
            model.load_state_dict(defense.on_aggregate(states, weights))
        record = {"round": t, **evaluate(model, *test), "seconds": time.perf_counter() - start}
        if not math.isfinite(record["loss"]):
            bar.close()
            raise FedAvgDiverged(t, history, f"the test loss is {record['loss']}")
        history.append(record)
        bar.set_postfix(acc=f"{record['accuracy']:.3f}")
        if on_round:
            on_round(record)
        if checkpoint:
            state = {"config": asdict(config), "run_tag": run_tag, "model": model.state_dict(), "history": history}
            write_atomic(checkpoint, checkpoint_writer(state))
    bar.close()
    return history


@dataclass(frozen=True)
class FedAvgExperiment:
    """One accuracy experiment: a dataset and model trained by FedAvg with a defense on every
    local step. The defense is named with its settings, as in :class:`~soteria_lib.pipeline.Setup`."""

    dataset: str = "mnist"
    model: str = "lenet"
    scale: str = "teaching"
    defense: str = "none"
    defense_settings: dict = field(default_factory=dict)
    training: FedAvgConfig = field(default_factory=FedAvgConfig)
    model_options: dict = field(default_factory=dict)  # on top of TRAINING_OPTIONS, e.g. {"activation": "sigmoid"}
    input_space: str = "normalized"  # or "pixels": the [0, 1] space DLG's sigmoid LeNet reads

    def __post_init__(self):
        dataset_info(self.dataset)
        get_scale(self.scale)
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        if self.input_space not in ("normalized", "pixels"):
            raise ValueError(f"unknown input_space {self.input_space!r}; choose 'normalized' or 'pixels'")
        self.setting()  # checks the defense and its settings

    def setting(self) -> DefenseSetting:
        return DefenseSetting.of(self.defense, **self.defense_settings)

    def normalization(self) -> Normalization:
        """The space the clients' inputs are in."""
        info = dataset_info(self.dataset)
        return info.normalization if self.input_space == "normalized" else Normalization.identity(info.shape[0])

    def build_model(self) -> nn.Module:
        """The model the clients train, before the defense's model hook, seeded by the caller."""
        info = dataset_info(self.dataset)
        options = {**TRAINING_OPTIONS.get(self.model, {}), **self.model_options}
        return get_model(self.model, info.shape, info.num_classes, **options)

    def build_defense(self) -> Defense:
        """The defense of every client step; a seeded one draws from the training seed + 1."""
        return self.setting().build(self.training.seed)

    def __hash__(self) -> int:  # a frozen value, but its dict fields cannot be hashed as they are
        return hash(json.dumps(asdict(self), sort_keys=True))

    def identity(self) -> dict:
        """The fields of ``metrics.json`` that say which run it is (a finished run is reused only
        for the same identity, and a checkpoint resumed only by it)."""
        setting = self.setting()
        model = {"model_options": self.model_options} if self.model_options else {}  # absent: the defaults
        if self.input_space != "normalized":
            model["input_space"] = self.input_space
        return {**asdict(self.training), "dataset": self.dataset, "model": self.model, **model, "scale": self.scale,
                "defense": setting.defense, "defense_settings": setting.settings()}

    @classmethod
    def with_options(cls, options: dict, **fixed) -> "FedAvgExperiment":
        """An experiment from ``fixed`` fields plus ``options`` (``model`` or any field of
        :class:`FedAvgConfig`; ``alpha`` chooses the Dirichlet split). Unknown names are refused."""
        training_fields = {f.name for f in fields(FedAvgConfig)} - {"iid"}
        allowed = training_fields | {"model", "model_options", "input_space"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"unknown FedAvg option {unknown[0]!r}; choose from {sorted(allowed)}")
        training = {k: v for k, v in options.items() if k in training_fields}
        if "alpha" in training:
            training["iid"] = False
        rest = {k: v for k, v in options.items() if k not in training_fields}
        return cls(**fixed, **rest, training=FedAvgConfig(**training))


def load_split(dataset: str, root, train: bool, limit: int | None, device="cpu",
               normalization: Normalization | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` examples of a split in ``normalization``'s space (default: the
    dataset's mean and std)."""
    data = load_dataset(dataset, root, train=train)
    n = len(data) if limit is None else min(limit, len(data))
    pixels = data.images[:n].float().div(255)
    normalization = normalization or dataset_info(dataset).normalization
    return normalization.normalize(pixels).to(device), data.labels[:n].to(device)


def fingerprint(*splits: tuple[torch.Tensor, torch.Tensor]) -> str:
    """A short digest of the examples a run trains and tests on: resuming a checkpoint on other
    data (another ``--data_root``) is refused."""
    digest = hashlib.sha256()
    for inputs, labels in splits:
        digest.update(inputs.detach().cpu().numpy().tobytes())
        digest.update(labels.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def snapshot_path(folder: str | Path, round_index: int) -> Path:
    """Where a run keeps its global model after ``round_index`` (for the attacks on trained models)."""
    return Path(folder) / f"global_round{round_index}.pt"


def run_experiment(experiment: FedAvgExperiment, output: str | Path | None = None, device: str = "cpu",
                   data_root: str | None = None, progress: bool = True, record_divergence: bool = False,
                   snapshots: tuple[int, ...] = ()) -> dict:
    """Train and evaluate ``experiment``; returns its result (identity, where it ran, final
    accuracy, seconds and the per-round history). With ``output``, the folder receives
    ``metrics.json`` and ``accuracy.png``, and ``checkpoint.pt`` after every round, from which an
    interrupted run resumes. A run that diverges raises :class:`FedAvgDiverged`; with
    ``record_divergence`` (a sweep, where a diverged run is a result) it stops there instead,
    and its result holds ``diverged_round`` and the accuracy of the last finite global model.
    ``snapshots``: rounds after which the global model is kept in ``output``
    (:func:`snapshot_path`; round 0 is the initial model)."""
    device = resolve_device(device)
    budget = get_scale(experiment.scale).fedavg
    normalization = experiment.normalization()
    train = load_split(experiment.dataset, data_root, True, budget.train_examples, device, normalization)
    test = load_split(experiment.dataset, data_root, False, budget.test_examples, device, normalization)
    seed_everything(experiment.training.seed)
    defense = experiment.build_defense()
    model = defense.on_model(experiment.build_model()).to(device)
    out = Path(output) if output is not None else None  # created by its first file: a failed run leaves no empty one
    run_tag = {**{k: v for k, v in experiment.identity().items() if k not in asdict(experiment.training)},
               "data": fingerprint(train, test)}
    privacy = privacy_budget(experiment, train[1])  # before training: a missing extra fails at once
    start, diverged = time.perf_counter(), None

    def keep(record: dict) -> None:
        if out is not None and record["round"] in snapshots:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            write_atomic(snapshot_path(out, record["round"]), checkpoint_writer(state))

    if out is not None and 0 in snapshots and not (out / "checkpoint.pt").exists():
        keep({"round": 0})  # the initial model, before any round (a resumed run kept it already)
    try:
        history = run_fedavg(model, train, test, experiment.training, defense,
                             checkpoint=out / "checkpoint.pt" if out else None, progress=progress,
                             run_tag=run_tag, normalization=normalization, on_round=keep)
    except FedAvgDiverged as exc:
        if not record_divergence:
            raise
        history, diverged = exc.history, exc.round
    result = {**experiment.identity(), **where_it_ran(device), "train_examples": len(train[1]),
              "test_examples": len(test[1]), "final_accuracy": history[-1]["accuracy"],
              "diverged_round": diverged, "privacy": privacy, "seconds": round(time.perf_counter() - start, 2),
              "history": history}
    if out is not None:
        write_together({out / "accuracy.png": lambda tmp: plot_accuracy({experiment.setting().defense: history}, tmp),
                        out / "metrics.json": json_writer(result)})
    return result


def read_result(folder: str | Path) -> dict:
    """The ``metrics.json`` a run wrote into ``folder``."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no FedAvg result in {folder} (expected {path.name})")
    try:
        result = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}); remove it to run that FedAvg cell again") from None
    if not isinstance(result, dict) or "final_accuracy" not in result:
        raise ValueError(f"{path} is not a FedAvg result (no final_accuracy); remove it to run that cell again")
    return result


def read_results(root: str | Path) -> dict[str, dict]:
    """Every run under ``root`` (one sub-folder per run), by folder name."""
    return {path.parent.name: read_result(path.parent) for path in sorted(Path(root).glob("*/metrics.json"))}
