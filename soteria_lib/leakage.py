"""Why a fully connected layer leaks its input, in closed form (chapter 1).

For one sample and a layer ``z = W r + b`` the chain rule gives

    dL/dW = (dL/dz) r^T,        dL/db = dL/dz,                                     (1)

so every row k of the weight gradient is the representation scaled by the bias gradient:

    r = (dL/dW)_{k,:} / (dL/db)_k      for any k with (dL/db)_k != 0.                (2)

The attacker reads r from the shared update without any optimisation. Soteria's mask zeroes
columns of dL/dW, which zeroes the matching entries of the recovered r.
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


def true_representation(model: nn.Module, inputs: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """The representation r the model computes for ``inputs`` (ground truth, for comparison)."""
    _, linear = select_linear(model, layer)
    with torch.no_grad():
        return representation_fn(model, linear)(inputs)
