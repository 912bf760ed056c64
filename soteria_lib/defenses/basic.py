"""Baseline defenses: the identity and gradient magnitude pruning (model compression), chapter 5."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..quantiles import percentile
from .registry import Defense, Strength, check_rate, register_defense

RATE = Strength("pruning_rate", "%", "p", check_rate)


@register_defense("none", title="no defense", order=0, style=("black", "*"), acts_on=(), aliases=("no",))
@dataclass
class NoDefense(Defense):
    """Share the gradient as computed (a copy, so callers may modify it freely)."""


@register_defense("prune", title="gradient pruning", order=2, style=("tab:blue", "s"), acts_on=("update",),
                  strength=RATE, flags={"pruning_rate": "pruning_rate"}, leaves_zeros=True)
@dataclass
class MagnitudePruning(Defense):
    """Model compression: in each gradient tensor separately, zero the entries whose magnitude
    lies below the ``pruning_rate``-th percentile of that tensor's magnitudes,

        g_j <- g_j * 1[|g_j| >= percentile(|g|, p)].
    """

    pruning_rate: float = 0.0

    def __post_init__(self):
        self.pruning_rate = check_rate(self.pruning_rate)

    def on_update(self, model, inputs, labels, gradients):
        out = []
        for g in gradients:
            threshold = percentile(g.abs(), self.pruning_rate).to(g.dtype)
            out.append(torch.where(g.abs() >= threshold, g, torch.zeros_like(g)))
        return tuple(out)
