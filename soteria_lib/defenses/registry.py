"""One registration per defense: its builder and every fact the rest of the library needs.

``@register_defense(name, ...)`` declares the name and its aliases, the strength parameter (a
pruning rate in percent, or a noise scale), which other options it takes, and how its settings
are titled, labelled, ordered, coloured and filed. The command lines' ``--defense`` choices,
:func:`defense_params` (run options to builder keywords), the sweep's grid parser, its FedAvg
folders, the summary's tables and the plots all read this table, so a new defense is one
registration. The defenses themselves are taught in chapters 4 (Soteria) and 5 (the baselines).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..runtime import MAX_SEED, check_seed


def check_rate(pruning_rate: float) -> float:
    """A pruning rate is a percentage in [0, 100)."""
    rate = float(pruning_rate)
    if not 0.0 <= rate < 100.0:
        raise ValueError(f"pruning_rate must be a percentage in [0, 100), got {pruning_rate}")
    return rate


def check_noise(noise: float) -> float:
    """A noise scale in a grid of settings is a finite number > 0 (noise 0 is the setting ``none``)."""
    value = float(noise)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"noise must be a finite number > 0, got {noise}")
    return value


@dataclass(frozen=True)
class Strength:
    """How strong a setting is: the run option that holds it, its unit in labels, its folder tag,
    and the check of one grid value."""

    option: str
    unit: str
    tag: str
    check: Callable[[float], float]


STRENGTHS = {
    "pruning_rate": Strength("pruning_rate", "%", "p", check_rate),
    "noise": Strength("noise", "", "s", check_noise),
}
# Run options a defense may take besides its strength, with their "not given" values.
OPTION_DEFAULTS = {"pruning_rate": 0.0, "noise": 0.0, "epsilon": None, "clip": None}


@dataclass(frozen=True)
class DefenseInfo:
    """What the library knows of a registered defense."""

    name: str
    builder: Callable
    title: str  # in prose and legends: "Soteria"
    strength: Strength | None  # None: the defense has no strength (the identity)
    keyword: str | None  # the builder's keyword for the strength ("pruning_rate", "sigma", ...)
    options: tuple[str, ...]  # other run options passed to the builder when given ("epsilon", "clip")
    seeded: bool  # the builder takes ``seed`` (random defenses)
    aliases: tuple[str, ...]
    family: str  # defenses shown together (both noise defenses: "noise")
    order: int  # position in tables and plots
    style: tuple[str, str]  # matplotlib colour and marker


DEFENSES: dict[str, DefenseInfo] = {}
ALIASES: dict[str, str] = {}


def register_defense(name: str, *, title: str, order: int, style: tuple[str, str], strength: str | None = None,
                     keyword: str | None = None, options: tuple[str, ...] = (), seeded: bool = False,
                     aliases: tuple[str, ...] = (), family: str | None = None):
    """Register the decorated builder ``builder(**params) -> defense`` under ``name``."""
    if (strength is None) != (keyword is None):
        raise ValueError(f"defense {name!r}: give both strength and keyword, or neither")
    unknown = set(options) - set(OPTION_DEFAULTS) - {strength}
    if strength is not None and strength not in STRENGTHS or unknown:
        raise ValueError(f"defense {name!r}: unknown strength or option; choose from {sorted(OPTION_DEFAULTS)}")

    def wrap(builder):
        for key in (name, *aliases):
            if key in DEFENSES or key in ALIASES:
                raise ValueError(f"defense name {key!r} is registered already")
        builder.__call__ = _refusing_non_finite(builder.__call__, name)
        DEFENSES[name] = DefenseInfo(name, builder, title, STRENGTHS.get(strength), keyword, tuple(options),
                                     seeded, tuple(aliases), family or name, order, style)
        ALIASES.update({alias: name for alias in aliases})
        return builder
    return wrap


def _refusing_non_finite(call: Callable, name: str) -> Callable:
    """Every registered defense refuses a gradient with NaN or infinite entries: they would move
    its thresholds (or pass straight through), and a diverged client has nothing to protect."""
    def checked(self, model, inputs, labels, gradients):
        if not all(bool(torch.isfinite(g).all()) for g in gradients):
            raise FloatingPointError(f"defense {name!r} was given a gradient with NaN or infinite entries")
        return call(self, model, inputs, labels, gradients)
    checked.__doc__, checked.__wrapped__ = call.__doc__, call
    return checked


def defense_names() -> list[str]:
    """Every name a user may give, aliases included (the command lines' choices)."""
    return sorted(set(DEFENSES) | set(ALIASES))


def defense_info(name: str) -> DefenseInfo:
    """The registration of ``name`` or of the defense it is an alias of."""
    key = ALIASES.get(name, name)
    if key not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose one of {defense_names()}")
    return DEFENSES[key]


def get_defense(name: str, **params):
    """Build the defense registered as ``name`` (or an alias) with the builder's keywords."""
    return defense_info(name).builder(**params)


def defense_params(name: str, seed: int = 0, **options) -> dict:
    """The builder keywords of defense ``name`` from run options (``pruning_rate``, ``noise``,
    ``epsilon``, ``clip``: the command lines' flags). An option the defense does not take is
    refused unless it has its "not given" value. A seeded defense draws from ``seed + 1`` (modulo
    2**32, the seeds torch tells apart), so that its noise never replays the stream that the run's
    other draws (model, dummy) start from."""
    info = defense_info(name)
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown defense option {unknown[0]!r}; choose from {sorted(OPTION_DEFAULTS)}")
    used = {info.strength.option: info.keyword} if info.strength else {}
    used.update({option: option for option in info.options})
    params = {}
    for option, value in options.items():
        if option in used:
            if value is not None:
                params[used[option]] = value
        elif value is not None and value != OPTION_DEFAULTS[option]:
            takes = ", ".join(used) or "no option"
            raise ValueError(f"{option} does not apply to defense {info.name!r} (it takes {takes})")
    if info.seeded:
        params["seed"] = (check_seed(seed) + 1) % (MAX_SEED + 1)
    return params


@dataclass(frozen=True)
class DefenseSetting:
    """One defense at one strength: a pruning rate in percent, a noise scale, or none (value 0)."""

    defense: str
    value: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "defense", defense_info(self.defense).name)  # aliases resolved
        object.__setattr__(self, "value", float(self.value))

    @classmethod
    def of(cls, defense: str, pruning_rate: float | None = 0.0, noise: float | None = 0.0) -> "DefenseSetting":
        """The setting from run options (the one the defense does not use is ignored)."""
        strength = defense_info(defense).strength
        values = {"pruning_rate": pruning_rate, "noise": noise}
        return cls(defense, (values[strength.option] or 0.0) if strength else 0.0)

    @property
    def info(self) -> DefenseInfo:
        return DEFENSES[self.defense]

    @property
    def parameter(self) -> str | None:
        """The run option that holds the strength, or None."""
        return self.info.strength.option if self.info.strength else None

    def run_options(self) -> dict:
        """``pruning_rate`` and ``noise`` as a run of this setting sets them."""
        options = {"pruning_rate": 0.0, "noise": 0.0}
        if self.parameter:
            options[self.parameter] = self.value
        return options

    def label(self) -> str:
        """``soteria 60%``, ``dp-gaussian 0.01``, ``none``."""
        strength = self.info.strength
        return f"{self.defense} {self.value:g}{strength.unit}" if strength else self.defense

    def tag(self) -> str:
        """The setting in a folder name: ``p60``, ``s0.01``, ``none``."""
        strength = self.info.strength
        return f"{strength.tag}{self.value:g}" if strength else "none"

    def sort_key(self) -> tuple:
        return (self.info.order, self.value)
