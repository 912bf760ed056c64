"""Defenses a client applies to its gradient before sharing it.

``get_defense(name, **params)`` returns a callable
``defense(model, inputs, labels, gradients) -> gradients`` that returns new tensors and
leaves its arguments untouched. Names: ``none``, ``soteria`` (alias ``ours``), ``prune``.
"""
from .registry import DEFENSES, get_defense, register_defense
from . import basic, soteria  # noqa: F401  (registration)
from .soteria import Soteria, select_linear, soteria_scores

__all__ = ["DEFENSES", "get_defense", "register_defense", "Soteria", "select_linear", "soteria_scores"]
