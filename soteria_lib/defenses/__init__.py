"""Defenses a client applies to its gradient before sharing it (chapters 4 and 5).

``get_defense(name, **params)`` returns a callable
``defense(model, inputs, labels, gradients) -> gradients`` that returns new tensors and
leaves its arguments untouched. :mod:`.registry` holds one registration per defense: ``none``,
``soteria`` (alias ``ours``), ``prune``, ``dp-gaussian``, ``dp-laplace`` and ``dp-sgd``.
"""
from .registry import (DEFENSES, DefenseInfo, DefenseSetting, defense_info, defense_names, defense_params,
                       get_defense, register_defense)
from . import basic, dpsgd, noise, soteria  # noqa: F401  (registration)
from .soteria import Soteria, feature_scores, keep_mask, mask_statistics, soteria_scores

__all__ = ["DEFENSES", "DefenseInfo", "DefenseSetting", "Soteria", "defense_info", "defense_names",
           "defense_params", "feature_scores", "get_defense", "keep_mask", "mask_statistics", "register_defense",
           "soteria_scores"]
