"""Defenses a client applies before it shares (chapters 4 and 5), and the server's side of them.

Each is one registration (:mod:`.registry`): where it acts (the model the client trains, the
data it trains on, the update it shares, what the server aggregates), its typed settings and the
facts the attackers, the summary and FedAvg read. ``get_defense(name, **settings)`` builds one;
a :class:`DefenseSetting` is a defense with its settings as data. Registered here: ``none``,
``soteria`` (alias ``ours``), ``prune``, ``dp-gaussian``, ``dp-laplace`` and ``dp-sgd``; more
come from extensions (:mod:`soteria_lib.extensions`).
"""
from .registry import (DEFENSES, STAGES, Defense, DefenseInfo, DefenseSetting, Strength, defense_info,
                       defense_names, from_flags, get_defense, parse_setting, register_defense)
from . import basic, dpsgd, noise, soteria  # noqa: F401  (registration)
from .soteria import Soteria, feature_scores, keep_mask, mask_statistics, soteria_scores

__all__ = ["DEFENSES", "STAGES", "Defense", "DefenseInfo", "DefenseSetting", "Soteria", "Strength", "defense_info",
           "defense_names", "feature_scores", "from_flags", "get_defense", "keep_mask", "mask_statistics",
           "parse_setting", "register_defense", "soteria_scores"]
