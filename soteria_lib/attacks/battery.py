"""The attacker battery: the attackers every defense faces in the reference sweep (chapters 5 and 8).

Each attacker is a set of attack settings, shared by DLG and GS, and the defenses it applies to:

* ``plain``: the published attacker, matching the whole update (chapters 2 and 3);
* ``mask-aware``: reads the exact zeros off a pruned update and matches only what was shared
  (``adaptive``, chapter 4); against noise there are no zeros and it *is* the plain attacker,
  so it is run only against the pruning defenses;
* ``layer-dropping``: leaves the defended layer's weight gradient out of the loss
  (Balunovic et al., ICLR 2022; chapter 8); only Soteria defends one layer and leaves the others
  as they were, so only Soteria faces it (pruning and noise alter every layer);
* ``closed-form``: the mask-aware attacker plus the prior (8.3) on the defended layer's input,
  read off the update in closed form (:mod:`~soteria_lib.attacks.prior`, chapter 1).

The worst case for a defense is, run by run, the lowest MSE any attacker that applies reaches.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

# The closed-form attacker's weight on (8.3). Measured against Soteria at 60 % (reference scale,
# mask-aware matching, PSNR of one run): GS on CIFAR-10 image 1 reaches 20.2 dB without the prior,
# 19.9 / 17.0 / 10.1 dB at weights 0.01 / 0.1 / 1; DLG on CIFAR-10 (images 1, 2) is within about
# 2 dB at any weight from 0.1 to 10. The prior re-expresses what the kept columns already carry,
# so the mildest weight tried is the one that does not hold the attack back.
PRIOR_WEIGHT = 0.01


@dataclass(frozen=True)
class Attacker:
    name: str
    title: str
    options: Mapping  # fields of the attack's settings (AttackSettings)
    applies: Callable[[str], bool]  # defense name -> whether this attacker is run against it


ATTACKERS: dict[str, Attacker] = {}


def register_attacker(name: str, title: str, options: dict, applies: Callable[[str], bool]) -> None:
    ATTACKERS[name] = Attacker(name, title, MappingProxyType(dict(options)), applies)


def every_defense(defense: str) -> bool:
    return True


def defended(defense: str) -> bool:
    return defense != "none"


def defends_one_layer(defense: str) -> bool:
    return defense == "soteria"


def leaves_zeros(defense: str) -> bool:
    """Pruning defenses share exact zeros that a mask-aware attacker can read."""
    return defense in ("soteria", "prune")


register_attacker("plain", "plain", {}, every_defense)
register_attacker("mask-aware", "mask-aware", {"adaptive": True}, leaves_zeros)
register_attacker("layer-dropping", "layer-dropping", {"drop_defended_layer": True}, defends_one_layer)
register_attacker("closed-form", "closed-form prior", {"adaptive": True, "representation_prior": PRIOR_WEIGHT},
                  defended)

ATTACKER_OPTIONS = frozenset(key for a in ATTACKERS.values() for key in a.options)


def attacker_info(name: str) -> Attacker:
    try:
        return ATTACKERS[name]
    except KeyError:
        raise ValueError(f"unknown attacker {name!r}; choose one of {list(ATTACKERS)}") from None
