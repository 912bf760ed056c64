"""Looking inside a model: the defended layer, its representation r, and where a parameter's
gradient sits in an update.

Every model of :mod:`soteria_lib.models` ends in a fully connected layer ``z = W r + b``; chapter 1
shows why its input r leaks (equation 1.2). Soteria (chapter 4) prunes features of r, the
certified bound (chapter 7) measures distances in r, and iDLG (chapter 2) reads the label off the
last layer. They all find that layer, capture r and index the update through this module.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (in module order): its classifier, and Soteria's default layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear layer")
    return linears[-1]


def select_linear(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Linear]:
    """The defended layer: ``layer`` by module path, or the model's last ``nn.Linear``."""
    modules = dict(model.named_modules())
    if layer is None:
        linear = last_linear(model)
        return next(name for name, m in modules.items() if m is linear), linear
    if layer not in modules:
        raise ValueError(f"no layer named {layer!r} in the model")
    if not isinstance(modules[layer], nn.Linear):
        raise ValueError(f"layer {layer!r} is a {type(modules[layer]).__name__}, not nn.Linear")
    return layer, modules[layer]


def num_classes(model: nn.Module) -> int:
    """The number of outputs of the model's classifier."""
    return last_linear(model).out_features


def parameter_index(model: nn.Module, parameter: torch.Tensor) -> int:
    """Position of ``parameter`` in ``model.parameters()``, hence of its gradient in an update."""
    return [p is parameter for p in model.parameters()].index(True)


class _Captured(Exception):
    """Raised by the hook to stop the forward pass once r is known."""


def representation_fn(model: nn.Module, linear: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> r``: the flattened input of ``linear`` when ``model`` runs on ``x``."""

    def run(x: torch.Tensor) -> torch.Tensor:
        captured = []

        def hook(module, args):
            captured.append(args[0])
            raise _Captured

        handle = linear.register_forward_pre_hook(hook)
        try:
            model(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError("the defended layer was not called in the forward pass")
        return captured[0].flatten(1)

    return run


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (BatchNorm on running statistics), then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
