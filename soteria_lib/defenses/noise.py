"""Noise baselines, the "differential privacy" defenses that Soteria is compared with (chapter 5).

Optionally clip, then perturb every entry of every gradient tensor independently:

    g <- g * min(1, C / ||g||_2),       ||g||_2 = sqrt(sum_k ||g_k||_2^2)                (1)
    g_j <- g_j + n_j,   n_j ~ N(0, sigma^2)  (dp-gaussian)  or  Laplace(0, b)  (dp-laplace)  (2)

Clipping (1) uses the *global* L2 norm of the whole update, all parameter tensors together (the
convention of DP-SGD for one example, and of DP-FedAvg for one client update), and only runs
when ``clip`` is given. Laplace noise is drawn as ``b (E_1 - E_2)`` with ``E_1, E_2 ~ Exp(1)``.
The Soteria DLG notebook adds Laplace noise with ``b = 0.1`` (std ``sqrt(2) b``); the GS script
once offered Gaussian noise with ``sigma = 1e-4``. Neither clipped nor calibrated the noise to a
privacy budget: these are the empirical baselines, not a DP guarantee.

Each defense owns a ``torch.Generator`` seeded with ``seed``, drawn on the CPU (the same noise
on every device); successive calls continue its stream. Noise 0 with no clip is the identity.
"""
from __future__ import annotations

import math

import torch

from .registry import register_defense


def _check_non_negative(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def clip_global_norm(gradients, clip: float):
    """Equation (1): scale the update so that its global L2 norm is at most ``clip``."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in gradients))
    factor = min(1.0, clip / float(norm)) if norm > 0 else 1.0
    return tuple(g * factor for g in gradients)


class _AdditiveNoise:
    """Clip (optional), then add ``level`` times unit noise from :meth:`unit_noise`."""

    def __init__(self, level: float, clip: float | None, seed: int, name: str):
        self.level = _check_non_negative(name, level)
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a finite number > 0 (or None for no clipping), got {clip}")
        self.clip = clip
        self.generator = torch.Generator().manual_seed(int(seed))

    def unit_noise(self, shape: torch.Size) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model, inputs, labels, gradients):
        out = clip_global_norm(gradients, self.clip) if self.clip is not None else tuple(g.clone() for g in gradients)
        if self.level == 0:
            return out
        return tuple(g + self.level * self.unit_noise(g.shape).to(g.device, g.dtype) for g in out)


@register_defense("dp-gaussian", title="Gaussian noise", order=3, style=("tab:green", "^"),
                  strength="noise", keyword="sigma", options=("clip",), seeded=True, family="noise")
class GaussianNoise(_AdditiveNoise):
    """Equation (2) with ``n_j ~ N(0, sigma^2)``."""

    def __init__(self, sigma: float = 0.0, clip: float | None = None, seed: int = 0):
        super().__init__(sigma, clip, seed, "sigma")

    def unit_noise(self, shape):
        return torch.randn(shape, generator=self.generator)


@register_defense("dp-laplace", title="Laplace noise", order=4, style=("tab:purple", "v"),
                  strength="noise", keyword="scale", options=("clip",), seeded=True, family="noise")
class LaplaceNoise(_AdditiveNoise):
    """Equation (2) with ``n_j ~ Laplace(0, scale)``, density ``exp(-|n|/b) / 2b``."""

    def __init__(self, scale: float = 0.0, clip: float | None = None, seed: int = 0):
        super().__init__(scale, clip, seed, "scale")

    def unit_noise(self, shape):
        exponentials = torch.empty(2, *shape).exponential_(generator=self.generator)
        return exponentials[0] - exponentials[1]
