"""Baseline defenses: the identity and gradient magnitude pruning (model compression), chapter 5."""
from __future__ import annotations

import torch

from ..quantiles import percentile
from .registry import check_rate, register_defense


@register_defense("none", title="no defense", order=0, style=("black", "*"), aliases=("no",))
class NoDefense:
    """Share the gradient as computed (a copy, so callers may modify it freely)."""

    def __call__(self, model, inputs, labels, gradients):
        return tuple(g.clone() for g in gradients)


@register_defense("prune", title="gradient pruning", order=2, style=("tab:blue", "s"),
                  strength="pruning_rate", keyword="pruning_rate")
class MagnitudePruning:
    """Model compression: in each gradient tensor separately, zero the entries whose magnitude
    lies below the ``pruning_rate``-th percentile of that tensor's magnitudes,

        g_j <- g_j * 1[|g_j| >= percentile(|g|, p)].
    """

    def __init__(self, pruning_rate: float = 0.0):
        self.pruning_rate = check_rate(pruning_rate)

    def __call__(self, model, inputs, labels, gradients):
        out = []
        for g in gradients:
            threshold = percentile(g.abs(), self.pruning_rate).to(g.dtype)
            out.append(torch.where(g.abs() >= threshold, g, torch.zeros_like(g)))
        return tuple(out)
