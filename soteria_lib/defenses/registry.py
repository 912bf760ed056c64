"""One registration per defense: where it acts, its typed settings, and every fact others need.

A defense is a class derived from :class:`Defense` and decorated with ``@register_defense``. Its
dataclass fields are its **settings** (types, defaults; ``__post_init__`` validates them), except
``seed`` (a random defense's stream, derived from the run's seed) and fields marked
``field(metadata=COMPUTATION)`` (how, not what: the result does not depend on them). The
registration declares:

* ``acts_on``: the stages it changes, any subset of :data:`STAGES`. The client trains and shares
  through :meth:`Defense.on_model` (the model the client trains, and the attacker sees),
  :meth:`Defense.on_data` (the batch the gradient is computed on), :meth:`Defense.on_update`
  (the gradient that leaves the client) and the server through :meth:`Defense.on_aggregate` (what it
  receives from a round). The class overrides exactly those hooks; every other stays the identity.
* ``strength``: the setting that orders its settings in tables and plots (a pruning rate, a noise
  scale), with its unit and folder tag; ``flags``: the command lines' historical flags it answers
  to (``--pruning_rate``, ``--noise``, ``--clip``, ``--epsilon``), flag -> setting.
* the facts the battery, the report and FedAvg read: ``leaves_zeros`` (its shared update has exact
  zeros an attacker can read: the mask-aware attacker applies), ``one_layer`` (it alters one layer's
  gradient and leaves the others as they were: the layer-dropping attacker applies; the layer is
  :meth:`Defense.defended_parameters`), ``noise`` (it adds random noise to the update, of the
  per-coordinate scale :meth:`Defense.noise_std`: the noise-aware attackers apply) and
  ``accountant`` (a function giving a FedAvg client's (epsilon, delta), for a mechanism with a
  privacy guarantee).

A :class:`DefenseSetting` is a defense with its settings as data (its non-default settings, one
JSON object in a results row); the grid, the results files and the summary use it, and
:meth:`DefenseSetting.build` makes the defense. The defenses are taught in chapters 4 (Soteria)
and 5 (the baselines).
"""
from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

from ..aggregation import average_states
from ..runtime import MAX_SEED, check_seed

STAGES = ("model", "data", "update", "aggregate")
HOOKS = {"model": "on_model", "data": "on_data", "update": "on_update", "aggregate": "on_aggregate"}
COMPUTATION = {"computation": True}  # field metadata: a setting of how, not what (left out of settings)


class Defense:
    """The identity at every stage; a registered defense overrides the hooks of its ``acts_on``."""

    def on_model(self, model: nn.Module) -> nn.Module:
        """The model the client trains (and shares its gradient of); the attacker knows it too."""
        return model

    def on_data(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the client computes its gradient on (new tensors; the private batch stays)."""
        return inputs, labels

    def on_update(self, model, inputs, labels, gradients):
        """The gradient the client shares (new tensors; the arguments stay untouched)."""
        return tuple(g.clone() for g in gradients)

    def on_aggregate(self, states: list[dict], weights: list[float]) -> dict:
        """What the server takes from a round: by default the weighted average of the clients' states."""
        return average_states(states, weights)

    def __call__(self, model, inputs, labels, gradients):
        """The update hook, so that a defense is also ``defense(model, inputs, labels, gradients)``."""
        return self.on_update(model, inputs, labels, gradients)

    def defended_parameters(self, model: nn.Module) -> tuple[str, ...]:
        """Names of the parameters whose gradients a one-layer defense alters (else none)."""
        return ()

    # A defense whose update hook does something deterministic before its noise overrides this
    # with a method: per-example gradients (batch first, one tensor per parameter) -> what the
    # hook makes of them without the noise, differentiable, so that an attacker can apply it to its
    # dummy's (Kerckhoffs; DP-SGD's clipping). None: the update is the batch gradient as it is.
    public_part = None

    def noise_std(self, batch_size: int) -> float | None:
        """The standard deviation of the noise on each coordinate of the shared gradient of a batch of
        ``batch_size`` (None: the defense adds no noise)."""
        return None

    def setting(self) -> "DefenseSetting | None":
        """This defense's registered name and settings, as data (what the server may know of it);
        None for a defense that is not registered (an experiment in a notebook or a test)."""
        info = next((i for i in DEFENSES.values() if type(self) is i.builder), None)
        if info is None:
            return None
        return DefenseSetting.of(info.name, **{name: getattr(self, name) for name in info.settings()})


def check_rate(pruning_rate: float) -> float:
    """A pruning rate is a finite percentage in [0, 100)."""
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


def check_non_negative(name: str, value) -> float:
    """A finite number >= 0 (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """A finite number > 0 (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Strength:
    """The setting that orders a defense's settings, its unit in labels, its folder tag, and the check
    of one grid value."""

    setting: str
    unit: str
    tag: str
    check: Callable[[float], float]


@dataclass(frozen=True)
class DefenseInfo:
    """What the library knows of a registered defense."""

    name: str
    builder: type
    title: str  # in prose and legends: "Soteria"
    acts_on: frozenset
    strength: Strength | None  # None: the defense has no strength (the identity)
    flags: dict  # command-line flag -> setting name
    seeded: bool  # the builder takes ``seed`` (random defenses)
    aliases: tuple[str, ...]
    family: str  # defenses shown together (the noise defenses: "noise")
    order: int  # position in tables and plots
    style: tuple[str, str]  # matplotlib colour and marker
    leaves_zeros: bool
    one_layer: bool
    noise: bool
    accountant: Callable | None  # (client example counts, FedAvg schedule, settings) -> budget

    def settings(self) -> dict:
        """Setting name -> its default (``MISSING`` where the builder requires it)."""
        return {f.name: f.default for f in fields(self.builder)
                if f.init and f.name != "seed" and not f.metadata.get("computation")}

    def build(self, seed: int = 0, **settings) -> Defense:
        """The defense with these settings; a seeded one draws from ``seed``."""
        unknown = sorted(set(settings) - set(self.settings()))
        if unknown:
            takes = ", ".join(self.settings()) or "no setting"
            raise ValueError(f"defense {self.name!r} has no setting {unknown[0]!r} (it takes {takes})")
        return self.builder(**settings, **({"seed": derived_seed(seed)} if self.seeded else {}))


def derived_seed(seed: int) -> int:
    """A seeded defense draws from ``seed + 1`` (modulo 2**32, the seeds torch tells apart), so that its
    noise never replays the stream that the run's other draws (model, dummy) start from."""
    return (check_seed(seed) + 1) % (MAX_SEED + 1)


DEFENSES: dict[str, DefenseInfo] = {}
ALIASES: dict[str, str] = {}


def register_defense(name: str, *, title: str, order: int, style: tuple[str, str], acts_on: tuple[str, ...],
                     strength: Strength | None = None, flags: dict | None = None, aliases: tuple[str, ...] = (),
                     family: str | None = None, leaves_zeros: bool = False, one_layer: bool = False,
                     noise: bool = False, accountant: Callable | None = None):
    """Register the decorated :class:`Defense` dataclass under ``name`` (see the module's docstring)."""
    unknown = sorted(set(acts_on) - set(STAGES))
    if unknown:
        raise ValueError(f"defense {name!r}: acts_on names stages of {list(STAGES)}, got {list(acts_on)}")

    def wrap(builder):
        for key in (name, *aliases):
            if key in DEFENSES or key in ALIASES:
                raise ValueError(f"defense name {key!r} is registered already")
        if not (isinstance(builder, type) and issubclass(builder, Defense)):
            raise TypeError(f"defense {name!r}: register a subclass of Defense")
        overridden = {stage for stage, hook in HOOKS.items() if getattr(builder, hook) is not getattr(Defense, hook)}
        if overridden != set(acts_on):
            raise ValueError(f"defense {name!r} declares acts_on {sorted(acts_on)} but overrides the hooks of "
                             f"{sorted(overridden)}")
        names = {f.name for f in fields(builder)}
        for setting in filter(None, [strength and strength.setting, *(flags or {}).values()]):
            if setting not in names:
                raise ValueError(f"defense {name!r}: {setting!r} is not one of its settings")
        builder.on_update = _refusing_non_finite(builder.on_update, name)
        DEFENSES[name] = DefenseInfo(name, builder, title, frozenset(acts_on), strength, dict(flags or {}),
                                     "seed" in names, tuple(aliases), family or name, order, style, leaves_zeros,
                                     one_layer, noise, accountant)
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


def get_defense(name: str, **params) -> Defense:
    """Build the defense registered as ``name`` (or an alias) with its settings (and ``seed``)."""
    info = defense_info(name)
    return info.builder(**params)


def from_flags(name: str, **flags) -> dict:
    """A defense's settings from the command lines' historical flags (``pruning_rate``, ``noise``,
    ``epsilon``, ``clip``); ``None`` is "not given". A flag the defense does not answer to is refused
    unless it is not given (or 0, the flags' old default)."""
    info = defense_info(name)
    settings = {}
    for flag, value in flags.items():
        if value is None:
            continue
        if flag in info.flags:
            settings[info.flags[flag]] = value
        elif value != 0:
            takes = ", ".join(info.flags) or "no option"
            raise ValueError(f"{flag} does not apply to defense {info.name!r} (it takes {takes})")
    return settings


def parse_setting(info: DefenseInfo, text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set``, the value parsed by the setting's type (``none`` for an optional one)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or key not in info.settings():
        takes = ", ".join(info.settings()) or "no setting"
        raise ValueError(f"--set {text!r}: defense {info.name!r} takes KEY=VALUE with KEY one of: {takes}")
    kind = typing.get_type_hints(info.builder)[key]
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    value = value.strip()
    if type(None) in options and value.lower() == "none":
        return key, None
    for option in options:
        try:
            if option is bool:
                return key, {"true": True, "false": False}[value.lower()]
            if option in (int, float, str):
                return key, option(value)
        except (ValueError, KeyError):
            continue
    raise ValueError(f"--set {text!r}: {key} must be {' or '.join(o.__name__ for o in options)}")


def _typed(info: DefenseInfo, name: str, value):
    """An integer given for a setting declared ``float`` (a TOML ``60``) as that float, so that equal
    settings compare equal; everything else as given (the defense validates it)."""
    kind = typing.get_type_hints(info.builder).get(name)
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if float in options and int not in options and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclass(frozen=True)
class DefenseSetting:
    """One defense with its settings as data: ``value`` is its strength (a pruning rate in percent, a
    noise scale; 0 for the identity), ``options`` its other non-default settings as sorted pairs.
    ``DefenseSetting("soteria", 60)``; ``DefenseSetting.of("dp-gaussian", sigma=0.01, clip=1.0)``."""

    defense: str
    value: float = 0.0
    options: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "defense", defense_info(self.defense).name)  # aliases resolved
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    @classmethod
    def of(cls, defense: str, **settings) -> "DefenseSetting":
        """The setting of ``defense`` with these settings, checked by building the defense once."""
        info = defense_info(defense)
        settings = {k: _typed(info, k, v) for k, v in settings.items()}
        info.build(**settings)
        defaults = info.settings()
        strength = info.strength.setting if info.strength else None
        options = {k: v for k, v in settings.items() if k != strength and v != defaults[k]}
        return cls(info.name, settings.get(strength, 0.0) if strength else 0.0, tuple(options.items()))

    @classmethod
    def from_json(cls, defense: str, text: str) -> "DefenseSetting":
        """The setting a results row or a FedAvg record stores (:meth:`to_json`)."""
        settings = json.loads(text) if isinstance(text, str) else text
        if not isinstance(settings, dict):
            raise ValueError(f"defense settings must be a JSON object, got {text!r}")
        return cls.of(defense, **settings)

    @property
    def info(self) -> DefenseInfo:
        return DEFENSES[self.defense]

    @property
    def parameter(self) -> str | None:
        """The setting that holds the strength, or None."""
        return self.info.strength.setting if self.info.strength else None

    def settings(self) -> dict:
        """The non-default settings, the strength included when it is not 0: the defense's keywords."""
        strength = {self.parameter: self.value} if self.parameter and self.value else {}
        return {**strength, **dict(self.options)}

    def to_json(self) -> str:
        """The settings as one canonical JSON object (``{}`` for the defaults)."""
        return json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))

    def build(self, seed: int = 0) -> Defense:
        return self.info.build(seed, **self.settings())

    def label(self) -> str:
        """``soteria 60%``, ``dp-gaussian 0.01``, ``dp-gaussian 0.01 clip=1``, ``none``."""
        strength = self.info.strength
        head = f"{self.defense} {self.value:g}{strength.unit}" if strength else self.defense
        return " ".join([head, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.options)])

    def tag(self) -> str:
        """The setting in a folder name: ``p60``, ``s0.01``, ``none``, ``s0.01_clip1``."""
        strength = self.info.strength
        head = f"{strength.tag}{self.value:g}" if strength else "none"
        return "_".join([head, *(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in self.options)])

    def sort_key(self) -> tuple:
        return (self.info.order, self.value, self.options)
