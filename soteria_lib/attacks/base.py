"""What every attack shares: the registry, the result type, label inference, the best-so-far record."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..threat import SharedUpdate, parameter_index

ATTACKS: dict[str, Callable[..., "Reconstruction"]] = {}


def register_attack(name: str, scales: dict[str, int]):
    """Register ``fn`` under ``name``; ``scales`` maps a budget name to its iteration count."""
    def wrap(fn):
        fn.scales = scales
        ATTACKS[name] = fn
        return fn
    return wrap


def get_attack(name: str) -> Callable[..., "Reconstruction"]:
    try:
        return ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}") from None


@dataclass
class Reconstruction:
    """An attack's output, in the model's input space (see the update's normalization)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    matching_loss: float
    iterations: int
    losses: list[float] = field(default_factory=list)
    frames: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    interrupted: bool = False
    details: dict = field(default_factory=dict)  # attack-specific figures, stored with the metrics


class BestSoFar:
    """Keeps the candidate with the lowest finite matching loss seen so far."""

    def __init__(self):
        self.loss = float("inf")
        self.inputs = None
        self.labels = None

    def offer(self, loss: float, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if loss == loss and loss < self.loss:  # loss == loss rejects NaN
            self.loss = loss
            self.inputs = inputs.detach().clone()
            self.labels = labels.detach().clone()


def visible_masks(update: SharedUpdate) -> tuple[torch.Tensor, ...]:
    """The adaptive attacker's view of a pruning defense: which entries of each shared tensor are
    non-zero. Soteria's pruned columns and magnitude pruning's zeros are exact zeros, visible to
    the server; multiplying the dummy gradient by these masks matches only what was really shared."""
    return tuple(g != 0 for g in update.gradients)


def last_linear_weight_index(model: nn.Module) -> int:
    """Position of the last ``nn.Linear``'s weight in ``model.parameters()``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear layer")
    return parameter_index(model, linears[-1].weight)


def infer_label(model: nn.Module, update: SharedUpdate) -> torch.Tensor:
    """iDLG (Zhao et al. 2020): for one sample with cross-entropy, dL/dW_c = (p_c - y_c) r^T, and
    with non-negative r only the true class's row sums to a negative number."""
    if update.metadata.batch_size != 1:
        raise ValueError("iDLG label inference needs a batch of one")
    weight_grad = update.gradients[last_linear_weight_index(model)]
    return torch.argmin(weight_grad.sum(dim=1)).reshape(1)
