"""What every attack shares: the registry, the result type, label inference, the best-so-far record."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..threat import SharedUpdate, last_linear, parameter_index

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


def matching_masks(model: nn.Module, update: SharedUpdate, adaptive: bool = False,
                   ignore_parameters: Sequence[str] = ()) -> tuple[torch.Tensor, ...] | None:
    """Which entries of each gradient tensor an attack matches, as boolean masks (``None``: all).

    ``adaptive`` keeps only the entries that are non-zero in the shared update
    (:func:`visible_masks`). ``ignore_parameters`` names parameters, as in
    ``model.named_parameters()`` (``"fc.weight"``), whose gradients are left out of the matching
    loss altogether: an attacker who knows which layer a defense alters simply drops it,

        min_{x'}  sum_{k not ignored} || g_k(x') - g_k ||^2 .

    Attacks multiply *both* their dummy gradient and the shared one by these masks, so an ignored
    tensor contributes nothing (not even a constant) to the loss or, for a cosine, to the norms.
    """
    names = [name for name, _ in model.named_parameters()]
    if len(names) != len(update.gradients):
        raise ValueError(f"{len(update.gradients)} shared gradients for a model with {len(names)} parameters")
    unknown = sorted(set(ignore_parameters) - set(names))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} in ignore_parameters; the model has {names}")
    if len(set(ignore_parameters)) == len(names):
        raise ValueError("ignore_parameters leaves no gradient to match")
    if not adaptive and not ignore_parameters:
        return None
    masks = visible_masks(update) if adaptive else tuple(torch.ones_like(g, dtype=torch.bool)
                                                         for g in update.gradients)
    return tuple(torch.zeros_like(m) if name in ignore_parameters else m for name, m in zip(names, masks))


LABEL_RULES = ("weight", "bias")


def infer_label(model: nn.Module, update: SharedUpdate, rule: str = "weight") -> torch.Tensor:
    """iDLG (Zhao et al. 2020): the label of a single sample, read off the last linear layer.

    With cross-entropy and softmax outputs ``p``, one sample gives ``dL/dz_c = p_c - y_c``: negative
    for the true class only (``p_c < 1``), positive for every other class. Hence

    * ``rule="bias"``:   ``dL/db_c = p_c - y_c``, so the label is ``argmin_c dL/db_c``;
    * ``rule="weight"``: ``dL/dW_c = (p_c - y_c) r^T``; with non-negative ``r`` (sigmoid or ReLU
      features) only the true class's row sums to a negative number: ``argmin_c sum_i dL/dW_ci``
      (iDLG's rule, which needs no bias).

    Soteria zeroes columns of ``dL/dW`` and leaves the bias alone, so neither rule is affected
    as long as one column survives.
    """
    if rule not in LABEL_RULES:
        raise ValueError(f"unknown label rule {rule!r}; choose one of {list(LABEL_RULES)}")
    if update.metadata.batch_size != 1:
        raise ValueError("iDLG label inference needs a batch of one")
    linear = last_linear(model)
    if rule == "bias":
        if linear.bias is None:
            raise ValueError("the last linear layer has no bias; use rule='weight'")
        return torch.argmin(update.gradients[parameter_index(model, linear.bias)]).reshape(1)
    weight_grad = update.gradients[parameter_index(model, linear.weight)]
    return torch.argmin(weight_grad.sum(dim=1)).reshape(1)
