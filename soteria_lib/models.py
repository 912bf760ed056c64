"""Models used by the attacks and defenses, behind a small registry.

Every model is a plain ``nn.Module`` returning logits: a feature extractor followed by one
fully connected classifier ``z = W r + b`` whose input ``r`` is the *data representation*
that Soteria defends. Nothing here returns ``r``: defenses capture it with a hook on the
linear layer, so any classifier works.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def wrap(builder):
        MODELS[name] = builder
        return builder
    return wrap


def get_model(name: str, input_shape: tuple[int, int, int], num_classes: int = 10, **options) -> nn.Module:
    """Build a registered model for inputs of shape ``(C, H, W)``."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return builder(input_shape=tuple(input_shape), num_classes=num_classes, **options)


def uniform_init_(model: nn.Module, bound: float = 0.5) -> nn.Module:
    """DLG's initialisation: every weight and bias drawn from U(-bound, bound)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(-bound, bound)
    return model


class LeNet(nn.Module):
    """The sigmoid LeNet of DLG (Zhu et al. 2019) and Soteria's DLG experiments.

    Four 5x5 convolutions with padding 2 and 12 channels, strides 2, 2, 1, 1, each followed
    by a sigmoid; the flattened output is the representation r, fed to one linear layer.
    The FC width follows from the input: 12 * 8 * 8 = 768 for 32x32, 12 * 7 * 7 = 588 for 28x28.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                 init: str = "uniform"):
        super().__init__()
        channels, height, width = input_shape
        layers, in_ch = [], channels
        for stride in (2, 2, 1, 1):
            layers += [nn.Conv2d(in_ch, 12, kernel_size=5, padding=2, stride=stride), nn.Sigmoid()]
            in_ch = 12
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            features = self.body(torch.zeros(1, channels, height, width)).shape[1]
        self.fc = nn.Linear(features, num_classes)
        if init == "uniform":
            uniform_init_(self)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; choose 'uniform' (DLG) or 'default' (PyTorch)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


register_model("lenet")(LeNet)
