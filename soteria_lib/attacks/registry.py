"""One registration per attack: the function, its settings and the set-up it was published with.

``@register_attack(name, config=..., model=..., ...)`` declares the attack's settings dataclass
(every option with its default, checked when built), the model it was published against, the
input space and data split of its experiments, and whether the server is given the labels. The
pipeline, the command line and the sweep's grid parser read this table; iteration budgets live
in :mod:`soteria_lib.scales`. The attacks are taught in chapters 2 (DLG) and 3 (GS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable

from torch import nn

from ..defenses import DefenseSetting
from ..introspection import select_linear
from .labels import LABEL_RULES

BOXES = ("free", "clamp", "sigmoid")
READOUTS = ("row", "least-squares")
COST_NAMES = ("l2", "sim")
LAYER_WEIGHTS = ("equal", "snr")
STARTS = ("random", "private")


def public_defense(update):
    """The defense the update declares, with its settings, as anyone may build it (Kerckhoffs)."""
    meta = update.metadata
    return DefenseSetting.of(meta.defense, **meta.defense_settings).build()


def public_noise_std(update) -> float:
    """The noise on each coordinate of the shared gradient, as the attacker knows it: the public
    defense's level at the update's batch size, over the square root of the client's local steps
    (the mean of that many independently noised gradients); 0 without noise."""
    sigma = public_defense(update).noise_std(update.metadata.batch_size) or 0.0
    return sigma / math.sqrt(update.metadata.extra.get("local_steps", 1))


def check_eval_mode(model: nn.Module, attack: str) -> None:
    """Attacks refuse BatchNorm in train mode: the client's update was then normalised with its own
    batch's statistics, which a dummy batch does not share. Run the model in eval mode, as the
    pipeline's client and attacker both do (chapter 3)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
        raise ValueError(f"{attack.upper()} runs BatchNorm in eval mode, as the client did: call model.eval() first")


def check_count(name: str, value, minimum: int) -> None:
    """A settings field that counts something (iterations, restarts) is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_finite(name: str, value: float, positive: bool = True) -> None:
    """A numeric settings field is finite and > 0 (``positive``) or >= 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")


@dataclass(frozen=True)
class AttackSettings:
    """The settings every attack shares; each attack's config adds its own and sets the default
    ``max_iterations`` (its teaching budget).

    ``infer_labels`` reads the label off the gradient (iDLG) instead of being told it.
    ``adaptive`` is the mask-aware attacker: entries that are exactly zero in the shared update
    are left out of the matching loss (chapter 4). ``ignore_parameters`` (names as in
    ``model.named_parameters()``, e.g. ``("fc.weight",)``) leaves those gradients out altogether,
    norms included (chapter 8; :func:`~soteria_lib.attacks.matching.matching_masks`);
    ``drop_defended_layer`` does the same for the weight of the layer Soteria defends (the model's
    last ``nn.Linear``), whatever its name. ``representation_prior`` weighs the closed-form
    attacker's prior on the defended layer's input (:mod:`~soteria_lib.attacks.prior`, chapter 8);
    0 leaves it out. ``image_prior`` adds a prior on natural images, the total variation of the
    dummy (GS's equation 3), weighed by that times the value the matching loss is expected to take at
    the private image under the defense's known noise, the attacker's weights included
    (:func:`~.loop.noise_energy`), so that one setting serves every noise level. A maximum a
    posteriori attacker's weight would scale with the noise variance alone; this one also shrinks
    where the signal-to-noise weights are small (DP-SGD), so it is a heuristic, tuned as one. Without
    noise it is left out (the private image is then an exact minimum).
    ``readout`` is how the prior reads r off the update: ``row`` (the best-conditioned row, exact
    without noise) or ``least-squares`` (every row, corrected for the defense's known noise: the
    noise-aware attacker). ``layer_weights="snr"`` weighs each tensor's matching term by its
    signal-to-noise ratio under the defense's known noise (:func:`~.loop.snr_weights`).
    ``mimic_defense`` puts the dummy's per-example gradients through the defense's public,
    deterministic part before matching (DP-SGD's clipping to norm C:
    ``Defense.public_part`` in :mod:`soteria_lib.defenses.registry`); other defenses are matched as before.
    ``label_rule`` is iDLG's rule (``"weight"`` or ``"bias"``) when ``infer_labels`` is set.
    ``cost_fn`` is the distance of gradients (``l2`` or ``sim``, one minus the cosine; None: the
    attack's published one, DLG ``l2``, GS ``sim``). ``restarts`` independent dummies run side by side; the one with the lowest matching loss is
    returned. ``box`` parametrises the dummy (:class:`~.loop.Box`; None: the attack's published
    choice, DLG ``free``, GS ``clamp``).
    ``stop_loss`` and ``patience`` stop the attack early on its matching loss
    (:func:`~soteria_lib.attacks.result.stop_reason`); both are off by default.
    ``unit_gradient`` multiplies each restart's objective by one constant, the inverse of its
    gradient's largest entry at the start (:func:`~.loop.unit_scale`): L-BFGS's tolerances are
    absolute, and against DP-SGD the noise-aware attacker's objective (a clipped dummy, weighed by
    signal-to-noise ratios far below 1) is so flat that L-BFGS stopped before its first step
    (chapter 5). The minimiser, the restart chosen and the matching loss reported do not change.
    ``start="private"`` is no attacker: :func:`~soteria_lib.pipeline.run_reconstruction` then starts
    every dummy at the client's private image (the oracle start of chapter 5), which tells an
    objective that does not single out the image (the search leaves it) from a search that does not
    find it (the search stays); ``random``, the attacker's own draws."""

    max_iterations: int = 0
    restarts: int = 1
    infer_labels: bool = False
    label_rule: str = "weight"
    adaptive: bool = False
    ignore_parameters: tuple[str, ...] = ()
    drop_defended_layer: bool = False
    representation_prior: float = 0.0
    image_prior: float = 0.0
    readout: str = "row"
    layer_weights: str = "equal"
    mimic_defense: bool = False
    cost_fn: str | None = None
    box: str | None = None
    stop_loss: float | None = None
    patience: int | None = None
    unit_gradient: bool = False
    start: str = "random"

    def __post_init__(self):
        object.__setattr__(self, "ignore_parameters", tuple(self.ignore_parameters))
        check_count("max_iterations", self.max_iterations, 0)
        check_count("restarts", self.restarts, 1)
        check_finite("representation_prior", self.representation_prior, positive=False)
        check_finite("image_prior", self.image_prior, positive=False)
        for name, value, allowed in (("label_rule", self.label_rule, LABEL_RULES), ("readout", self.readout, READOUTS),
                                     ("layer_weights", self.layer_weights, LAYER_WEIGHTS),
                                     ("box", self.box, (None, *BOXES)), ("cost_fn", self.cost_fn, (None, *COST_NAMES)),
                                     ("start", self.start, STARTS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {[a for a in allowed if a]}")
        if self.stop_loss is not None:
            check_finite("stop_loss", self.stop_loss, positive=False)
        if self.patience is not None:
            check_count("patience", self.patience, 1)

    def ignored(self, model: nn.Module, update=None) -> tuple[str, ...]:
        """The parameters whose gradients the attack leaves out: ``ignore_parameters`` plus, with
        ``drop_defended_layer``, the layer the update's (public) defense alters, or where it alters
        none in particular the model's last ``nn.Linear`` (Soteria's default layer)."""
        if not self.drop_defended_layer:
            return self.ignore_parameters
        defended = public_defense(update).defended_parameters(model) if update is not None else ()
        if not defended:
            name, _ = select_linear(model)
            defended = (f"{name}.weight",)
        return tuple(dict.fromkeys((*self.ignore_parameters, *defended)))


@dataclass(frozen=True)
class AttackInfo:
    name: str
    run: Callable  # run(model, update, config=None, *, seed, progress, frame_every, start_image, **settings)
    config: type  # frozen dataclass of settings, defaults included
    model: str  # the published model (a name in soteria_lib.models)
    normalize: bool  # inputs in the dataset's mean/std space (else [0, 1] pixels)
    train_split: bool  # targets from the training split (else the test split)
    labels_known: bool  # the server is told the labels (else it reads them off the gradient)

    def settings(self) -> list[str]:
        return [f.name for f in fields(self.config)]

    def configure(self, config=None, **settings):
        """``config`` (default: the defaults) with ``settings`` replaced; every name and value is
        checked, and a mistake is a one-line ``ValueError``."""
        unknown = sorted(set(settings) - set(self.settings()))
        if unknown:
            raise ValueError(f"attack {self.name!r} has no option {unknown[0]!r}; it accepts {self.settings()}")
        return replace(config if config is not None else self.config(), **settings)


ATTACKS: dict[str, AttackInfo] = {}


def register_attack(name: str, *, config: type, model: str, normalize: bool, train_split: bool,
                    labels_known: bool):
    def wrap(run):
        ATTACKS[name] = AttackInfo(name, run, config, model, normalize, train_split, labels_known)
        return run
    return wrap


def attack_info(name: str) -> AttackInfo:
    try:
        return ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}") from None


def get_attack(name: str) -> Callable:
    """The attack function ``run(model, update, config=None, **settings) -> Reconstruction``."""
    return attack_info(name).run
