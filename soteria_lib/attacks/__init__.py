"""Gradient-inversion attacks. Each takes ``(model, update, **options)``, where ``update`` is a
:class:`~soteria_lib.threat.SharedUpdate`, and returns a :class:`Reconstruction`. No attack
accepts the private batch."""
from .base import ATTACKS, Reconstruction, get_attack, register_attack
from . import dlg, gs  # noqa: F401  (registration)

__all__ = ["ATTACKS", "Reconstruction", "get_attack", "register_attack"]
