"""The closed-form attacker's prior: what the update gives away of the defended layer's input r,
turned into a term of the attack's loss (chapter 8, equation 8.3).

For one sample, every row of the defended layer's weight gradient is r scaled by its bias
gradient (chapter 1, equation 1.2), so the server reads

    r_hat = (dL/dW)_{k,:} / (dL/db)_k,        K = { i : r_hat_i != 0 }

without any optimisation (``readout="row"``). Soteria zeroes the columns of the pruned features,
so K holds exactly the features it kept; noise perturbs every entry of r_hat, and the
noise-aware attacker reads it by least squares over every row instead, knowing the defense's
noise level (``readout="least-squares"``, :func:`~soteria_lib.leakage.least_squares_representation`).
The attacker then adds to its matching loss

    P(x') = sum_{i in K} (r_i(x') - r_hat_i)^2 / sum_{i in K} r_hat_i^2                  (8.3)

weighted by ``representation_prior``: the dummy's representation must agree with what was read
in closed form. P vanishes at the private image when the recovery is exact, so the prior moves
no global minimum of the matching loss; it only gives the optimiser a direct path to it.

How much the read-out knows of the image is measured against what the attacker knows without the
update, the mean representation r_bar of public images (:func:`readout_error`, chapter 5's section
"Why the attackers fail against noise"):

    e = ||r_hat - r|| / ||r_bar - r||

Below 1 the read-out is closer to this image's r than the public average is; at 1 or above it is
not. The relative error ||r_hat - r|| / ||r|| hides this: on the sigmoid LeNet every feature of r
is a sigmoid output, and what tells one image from another is a few per cent of r's norm.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..introspection import representation_fn, select_linear
from ..leakage import least_squares_representation, recover_representation
from ..threat import SharedUpdate
from .registry import public_noise_std


def read_representation(model: nn.Module, update: SharedUpdate, readout: str = "row") -> torch.Tensor:
    """r as the attacker reads it off the update: one row, or least squares at the public noise level."""
    if readout == "row":
        return recover_representation(model, update)
    return least_squares_representation(model, update, public_noise_std(update))


def readout_error(model: nn.Module, update: SharedUpdate, truth: torch.Tensor, reference: torch.Tensor,
                  readout: str = "least-squares") -> float:
    """``e = ||r_hat - r|| / ||r_bar - r||`` for the image whose representation is ``truth`` and the
    public mean ``reference``; infinite where the least-squares read-out refuses (the bias gradient's
    energy does not stand above the noise's)."""
    try:
        r_hat = read_representation(model, update, readout)
    except ValueError:
        return math.inf
    return float((r_hat - truth).norm() / (reference - truth).norm())


class RepresentationPrior:
    """``x -> P(x)``, equation (8.3), for a batch of one; refuses an update that gives nothing
    away (no bias gradient to divide by, or nothing recovered)."""

    def __init__(self, model: nn.Module, update: SharedUpdate, readout: str = "row"):
        r_hat = read_representation(model, update, readout)
        if not torch.isfinite(r_hat).all():
            raise ValueError("the shared bias gradient of the defended layer is zero: r cannot be read off "
                             "the update, so the closed-form prior does not apply")
        self.known = (r_hat != 0).to(r_hat.dtype)
        self.target = r_hat * self.known
        self.scale = self.target.pow(2).sum()
        if self.scale == 0:
            raise ValueError("no feature of r is recoverable from the update: the closed-form prior does not apply")
        _, linear = select_linear(model)
        self.representation = representation_fn(model, linear)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        r = self.representation(x)[0]
        return ((r - self.target) * self.known).pow(2).sum() / self.scale


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """GS's equation (3), the image prior: anisotropic TV with means of absolute neighbour
    differences, (.., H, W) input. GS adds it with weight ``tv``; the image-prior attacker of the
    battery adds it to DLG at a weight set by the noise (``AttackSettings.image_prior``)."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def representation_prior(model: nn.Module, update: SharedUpdate, weight: float, readout: str = "row"):
    """``x -> weight * P(x)``, or ``None`` when ``weight`` is 0 (the plain attacker)."""
    if weight == 0:
        return None
    prior = RepresentationPrior(model, update, readout)
    return lambda x: weight * prior(x)
