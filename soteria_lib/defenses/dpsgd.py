"""DP-SGD (Abadi et al., CCS 2016): the noise baseline that comes with a privacy guarantee
(chapter 5; the guarantee is :mod:`soteria_lib.privacy`).

Unlike the noise baselines of :mod:`.noise`, which perturb the batch gradient as it is, DP-SGD
bounds each example's influence first: every example's gradient is clipped to L2 norm ``C``
(over all parameter tensors together), the clipped gradients are summed, Gaussian noise of
standard deviation ``z C`` is added to every entry, and the sum is divided by the batch size B:

    g = (1/B) ( sum_n g_n min(1, C / ||g_n||_2)  +  N(0, z^2 C^2 I) )                     (3)

Zeroing one example's gradient changes the clipped sum by at most ``C``, so each step is a
Gaussian mechanism with noise multiplier ``z`` on one example's data (zero-out adjacency;
:mod:`soteria_lib.privacy`), which an accountant
composes over the steps a client takes. Per-example gradients come from ``torch.func``
(``vmap`` of ``grad`` of the mean cross-entropy of one example), so models with BatchNorm in
training mode are refused by ``vmap``. The noise is drawn on the CPU from the defense's own
generator, as in :mod:`.noise`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ..privacy import fedavg_ledger
from ..runtime import check_seed
from .registry import Defense, Strength, check_noise, check_non_negative, check_positive, register_defense


def per_example_gradients(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> tuple:
    """The gradient of each example's cross-entropy, one tensor per parameter with the batch first."""
    names = [name for name, _ in model.named_parameters()]
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss(values, x, y):
        logits = functional_call(model, ({**dict(zip(names, values)), **buffers}), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))([params[n] for n in names], inputs, labels)
    return tuple(per_example)


def clipped_sum(per_example: tuple, clip: float) -> tuple:
    """The sum over the batch of every example's gradient clipped to global L2 norm ``clip``."""
    norms = torch.sqrt(sum((g.double() ** 2).flatten(1).sum(1) for g in per_example))
    factors = torch.clamp(clip / norms.clamp_min(1e-300), max=1.0)
    return tuple((g * factors.to(g.dtype).view(-1, *([1] * (g.dim() - 1)))).sum(0) for g in per_example)


@register_defense("dp-sgd", title="DP-SGD", order=5, style=("tab:brown", "D"), acts_on=("update",),
                  strength=Strength("noise_multiplier", "", "s", check_noise),
                  flags={"noise": "noise_multiplier", "clip": "clip"}, family="noise", noise=True,
                  accountant=fedavg_ledger)
@dataclass
class DPSGD(Defense):
    """Equation (3): per-example clipping to ``clip`` (1 by default), noise multiplier ``z``."""

    noise_multiplier: float = 0.0
    clip: float = 1.0
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.noise_multiplier = check_non_negative("noise_multiplier", self.noise_multiplier)
        self.clip = check_positive("clip", self.clip)
        self.generator = torch.Generator().manual_seed(check_seed(self.seed))

    def on_update(self, model, inputs, labels, gradients):
        summed = clipped_sum(per_example_gradients(model, inputs, labels), self.clip)
        scale = self.noise_multiplier * self.clip
        return tuple((s + scale * torch.randn(s.shape, generator=self.generator).to(s.device, s.dtype)) / len(inputs)
                     if scale else s / len(inputs) for s in summed)

    def public_part(self, per_example: tuple) -> tuple:
        """Equation (3) without its noise: the mean of the clipped gradients (differentiable)."""
        return tuple(s / len(per_example[0]) for s in clipped_sum(per_example, self.clip))

    def noise_std(self, batch_size: int) -> float:
        """``z C / B``: the noise of the clipped sum, divided by the batch size with it."""
        return self.noise_multiplier * self.clip / batch_size
