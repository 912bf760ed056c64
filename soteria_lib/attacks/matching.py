"""What an attacker matches: the distance between a dummy's gradient and the shared one, and
which entries of the update enter it.

* :func:`l2_cost`, DLG's squared Euclidean distance (chapter 2, equation 2.1), also GS's
  ``cost_fn="l2"``; :func:`cosine_cost`, GS's one minus cosine similarity (chapter 3).
* :func:`visible_masks` and :func:`matching_masks`: the mask-aware attacker of chapter 4 reads the
  zeros off a pruned update and matches only what was shared; the layer-dropping attacker of
  chapter 8 leaves the defended layer out of the loss.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..threat import Gradients, SharedUpdate


def l2_cost(dummy: Gradients, shared: Gradients) -> torch.Tensor:
    """``sum_k ||g_k(x') - g_k||^2``: squared L2 distance summed over all parameter tensors."""
    return sum(((d - s) ** 2).sum() for d, s in zip(dummy, shared))


def cosine_cost(dummy: Gradients, shared: Gradients) -> torch.Tensor:
    """``1 - <g', g> / (||g'|| ||g||)`` over all tensors concatenated (one cosine, equal weights)."""
    dot = sum((d * s).sum() for d, s in zip(dummy, shared))
    dummy_norm = sum(d.pow(2).sum() for d in dummy).sqrt()
    shared_norm = sum(s.pow(2).sum() for s in shared).sqrt()
    return 1 - dot / (dummy_norm * shared_norm)


COSTS = {"l2": l2_cost, "sim": cosine_cost}  # the attacks' cost_fn


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


def masked(gradients: Gradients, masks: Gradients | None) -> Gradients:
    """``gradients`` with every entry outside ``masks`` set to zero (``None``: unchanged)."""
    return gradients if masks is None else tuple(g * m for g, m in zip(gradients, masks))
