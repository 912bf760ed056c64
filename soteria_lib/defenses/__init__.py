"""Defenses a client applies to its gradient before sharing it.

``get_defense(name, **params)`` returns a callable
``defense(model, inputs, labels, gradients) -> gradients`` that returns new tensors and
leaves its arguments untouched. Names: ``none``, ``soteria`` (alias ``ours``), ``prune``,
``dp-gaussian`` and ``dp-laplace``.
"""
from .registry import DEFENSES, get_defense, register_defense
from . import basic, noise, soteria  # noqa: F401  (registration)
from .noise import NOISE_PARAMETERS
from .soteria import Soteria, keep_mask, mask_statistics, select_linear, soteria_scores

__all__ = ["DEFENSES", "NOISE_PARAMETERS", "get_defense", "register_defense", "Soteria", "keep_mask",
           "mask_statistics", "select_linear", "soteria_scores"]
