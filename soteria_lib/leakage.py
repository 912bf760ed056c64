"""Why a fully connected layer leaks its input, in closed form (chapter 1).

For one sample and a layer ``z = W r + b`` the chain rule gives

    dL/dW = (dL/dz) r^T,        dL/db = dL/dz,                                     (1)

so every row k of the weight gradient is the representation scaled by the bias gradient:

    r = (dL/dW)_{k,:} / (dL/db)_k      for any k with (dL/db)_k != 0.                (2)

The attacker reads r from the shared update without any optimisation. Soteria's mask zeroes
columns of dL/dW, which zeroes the matching entries of the recovered r. When every entry of the
update carries independent noise of known standard deviation sigma (the noise defenses), one row
is a poor estimate; least squares over all K rows, with the noise's share of the denominator
taken out (the bias gradients are noisy too), reads r almost noise-free when the bias gradient
stands above the noise (chapter 8):

    r_hat = sum_k b_k W_k / (sum_k b_k^2 - K sigma^2),   W = dL/dW + noise, b = dL/db + noise.   (3)
"""
from __future__ import annotations

import torch
from torch import nn

from .introspection import parameter_index, representation_fn, select_linear
from .threat import SharedUpdate


def recover_representation(model: nn.Module, update: SharedUpdate, layer: str | None = None) -> torch.Tensor:
    """Equation (2) with the row of largest |dL/db_k| (the best-conditioned division)."""
    if update.metadata.batch_size != 1:
        raise ValueError("the closed-form recovery of r needs a batch of one")
    _, linear = select_linear(model, layer)
    if linear.bias is None:
        raise ValueError("the layer has no bias, so equation (2) has no denominator")
    weight_grad = update.gradients[parameter_index(model, linear.weight)]
    bias_grad = update.gradients[parameter_index(model, linear.bias)]
    k = int(bias_grad.abs().argmax())
    return weight_grad[k] / bias_grad[k]


def least_squares_representation(model: nn.Module, update: SharedUpdate, sigma: float = 0.0,
                                 layer: str | None = None) -> torch.Tensor:
    """Equation (3); with ``sigma = 0`` it is exact wherever (2) is. Refuses an update whose bias
    gradient does not stand above the noise (nothing to divide by)."""
    if update.metadata.batch_size != 1:
        raise ValueError("the closed-form recovery of r needs a batch of one")
    _, linear = select_linear(model, layer)
    if linear.bias is None:
        raise ValueError("the layer has no bias, so equation (3) has no denominator")
    weight_grad = update.gradients[parameter_index(model, linear.weight)].double()
    bias_grad = update.gradients[parameter_index(model, linear.bias)].double()
    denominator = float(bias_grad.pow(2).sum()) - bias_grad.numel() * sigma ** 2
    if denominator <= 0:
        raise ValueError("the bias gradient does not stand above the noise: r cannot be read off the update")
    return (bias_grad @ weight_grad / denominator).to(update.gradients[0].dtype)


def true_representation(model: nn.Module, inputs: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """The representation r the model computes for ``inputs`` (ground truth, for comparison)."""
    _, linear = select_linear(model, layer)
    with torch.no_grad():
        return representation_fn(model, linear)(inputs)
