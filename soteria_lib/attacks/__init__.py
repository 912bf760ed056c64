"""Gradient-inversion attacks (chapters 2, 3 and 8). Each takes ``(model, update)``, where
``update`` is a :class:`~soteria_lib.threat.SharedUpdate`, plus its settings (a config dataclass,
or the same fields as keywords), and returns a :class:`Reconstruction`. No attack accepts the
private batch."""
from .registry import ATTACKS, AttackInfo, attack_info, get_attack, register_attack
from .labels import infer_label
from .matching import cosine_cost, l2_cost, matching_masks, visible_masks
from .result import Reconstruction
from .dlg import DLGConfig
from .gs import GSConfig

__all__ = ["ATTACKS", "AttackInfo", "DLGConfig", "GSConfig", "Reconstruction", "attack_info", "cosine_cost",
           "get_attack", "infer_label", "l2_cost", "matching_masks", "register_attack", "visible_masks"]
