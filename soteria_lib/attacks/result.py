"""What every attack returns: the :class:`Reconstruction`, the best-so-far record an interrupted
or diverging attack falls back on, and the rule that stops an attack early (chapters 2 and 3)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


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


def stop_reason(losses: list[float], stop_loss: float | None, patience: int | None,
                min_improvement: float = 1e-3) -> str | None:
    """Why an attack whose matching losses so far are ``losses`` should stop now, or None.

    * ``diverged``: the latest loss is NaN (an infinite one may still come back);
    * ``converged``: it is at or below ``stop_loss`` (the gradients match as well as needed);
    * ``stalled``: over the last ``patience`` iterations the best loss improved by less than a
      relative ``min_improvement`` on the best before them.

    ``None`` for ``stop_loss`` or ``patience`` turns that rule off. An attack that runs its whole
    budget stops for ``budget``, one cut short by Ctrl-C for ``interrupted``."""
    loss = losses[-1]
    if math.isnan(loss):
        return "diverged"
    if stop_loss is not None and loss <= stop_loss:
        return "converged"
    if patience and len(losses) > patience:
        before, recent = min(losses[:-patience]), min(losses[-patience:])
        if recent > before - min_improvement * abs(before):
            return "stalled"
    return None
