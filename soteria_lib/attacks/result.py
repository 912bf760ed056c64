"""What every attack returns: the :class:`Reconstruction`, and the best-so-far record an
interrupted or diverging attack falls back on (chapters 2 and 3)."""
from __future__ import annotations

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
