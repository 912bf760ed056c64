"""Noise baselines, the "differential privacy" defenses that Soteria is compared with (chapter 5).

Optionally clip, then perturb every entry of every gradient tensor independently:

    g <- g * min(1, C / ||g||_2),       ||g||_2 = sqrt(sum_k ||g_k||_2^2)                (1)
    g_j <- g_j + n_j,   n_j ~ N(0, sigma^2)  (dp-gaussian)  or  Laplace(0, b)  (dp-laplace)  (2)

Clipping (1) uses the *global* L2 norm of the whole update, all parameter tensors together (the
convention of DP-SGD for one example, and of DP-FedAvg for one client update), and only runs
when ``clip`` is given. Laplace noise is drawn as ``b (E_1 - E_2)`` with ``E_1, E_2 ~ Exp(1)``
(standard deviation ``sqrt(2) b``). The Soteria DLG notebook adds Laplace noise with ``b = 0.1``;
the GS script once offered Gaussian noise with ``sigma = 1e-4``. Neither clipped nor calibrated
the noise to a privacy budget: these are the empirical baselines, not a DP guarantee.

Each defense owns a ``torch.Generator`` seeded with ``seed``, drawn on the CPU (the same noise
on every device); successive calls continue its stream. Noise 0 with no clip is the identity.
Both register as noise mechanisms, so the noise-aware attackers (chapter 8) face them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..runtime import check_seed
from .registry import Defense, Strength, check_noise, check_non_negative, check_positive, register_defense


def clip_global_norm(gradients, clip: float):
    """Equation (1): scale the update so that its global L2 norm is at most ``clip``."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in gradients))
    factor = min(1.0, clip / float(norm)) if norm > 0 else 1.0
    return tuple(g * factor for g in gradients)


@dataclass
class AdditiveNoise(Defense):
    """Clip (optional), then add ``level`` times unit noise from :meth:`unit_noise`."""

    clip: float | None = None
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        check_non_negative(self.LEVEL, self.level)
        if self.clip is not None:
            self.clip = check_positive("clip", self.clip)
        self.generator = torch.Generator().manual_seed(check_seed(self.seed))

    @property
    def level(self) -> float:
        return getattr(self, self.LEVEL)

    def unit_noise(self, shape: torch.Size) -> torch.Tensor:
        raise NotImplementedError

    def on_update(self, model, inputs, labels, gradients):
        out = clip_global_norm(gradients, self.clip) if self.clip is not None else tuple(g.clone() for g in gradients)
        if self.level == 0:
            return out
        return tuple(g + self.level * self.unit_noise(g.shape).to(g.device, g.dtype) for g in out)


NOISE = Strength("sigma", "", "s", check_noise)


@register_defense("dp-gaussian", title="Gaussian noise", order=3, style=("tab:green", "^"), acts_on=("update",),
                  strength=NOISE, flags={"noise": "sigma", "clip": "clip"}, family="noise", noise=True)
@dataclass
class GaussianNoise(AdditiveNoise):
    """Equation (2) with ``n_j ~ N(0, sigma^2)``."""

    LEVEL = "sigma"
    sigma: float = 0.0

    def unit_noise(self, shape):
        return torch.randn(shape, generator=self.generator)

    def noise_std(self, batch_size: int) -> float:
        return float(self.sigma)


@register_defense("dp-laplace", title="Laplace noise", order=4, style=("tab:purple", "v"), acts_on=("update",),
                  strength=Strength("scale", "", "s", check_noise), flags={"noise": "scale", "clip": "clip"},
                  family="noise", noise=True)
@dataclass
class LaplaceNoise(AdditiveNoise):
    """Equation (2) with ``n_j ~ Laplace(0, scale)``, density ``exp(-|n|/b) / 2b``."""

    LEVEL = "scale"
    scale: float = 0.0

    def unit_noise(self, shape):
        exponentials = torch.empty(2, *shape).exponential_(generator=self.generator)
        return exponentials[0] - exponentials[1]

    def noise_std(self, batch_size: int) -> float:
        return math.sqrt(2.0) * float(self.scale)
