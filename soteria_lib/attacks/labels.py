"""iDLG (Zhao et al. 2020): the label of one sample, read off the gradient of the last layer.
Chapter 2 teaches it; chapter 8 shows that Soteria leaves it intact.
"""
from __future__ import annotations

import torch
from torch import nn

from ..introspection import last_linear, parameter_index
from ..threat import SharedUpdate

LABEL_RULES = ("weight", "bias")


def infer_label(model: nn.Module, update: SharedUpdate, rule: str = "weight") -> torch.Tensor:
    """iDLG (Zhao et al. 2020): the label of a single sample, read off the last linear layer.

    With cross-entropy and softmax outputs ``p``, one sample gives ``dL/dz_c = p_c - y_c``: negative
    for the true class only (``p_c < 1``), positive for every other class. Hence

    * ``rule="bias"``:   ``dL/db_c = p_c - y_c``, so the label is ``argmin_c dL/db_c``;
    * ``rule="weight"``: ``dL/dW_c = (p_c - y_c) r^T``; with non-negative ``r`` (sigmoid or ReLU
      features) only the true class's row sums to a negative number: ``argmin_c sum_i dL/dW_ci``
      (iDLG's rule, which needs no bias).

    Soteria zeroes columns of ``dL/dW`` and leaves the bias alone, so neither rule is affected
    as long as one column survives.
    """
    if rule not in LABEL_RULES:
        raise ValueError(f"unknown label rule {rule!r}; choose one of {list(LABEL_RULES)}")
    if update.metadata.batch_size != 1:
        raise ValueError("iDLG label inference needs a batch of one")
    linear = last_linear(model)
    if rule == "bias":
        if linear.bias is None:
            raise ValueError("the last linear layer has no bias; use rule='weight'")
        return torch.argmin(update.gradients[parameter_index(model, linear.bias)]).reshape(1)
    weight_grad = update.gradients[parameter_index(model, linear.weight)]
    return torch.argmin(weight_grad.sum(dim=1)).reshape(1)
