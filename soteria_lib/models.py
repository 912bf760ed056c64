"""Models used by the attacks and defenses, behind a small registry (chapters 2 and 3).

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
    ``activation="relu"`` gives the same architecture in a form that trains quickly with SGD
    (used for the FedAvg accuracy runs; four saturating sigmoids learn very slowly).
    """

    ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                 init: str = "uniform", activation: str = "sigmoid"):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(self.ACTIVATIONS)}")
        channels, height, width = input_shape
        layers, in_ch = [], channels
        for stride in (2, 2, 1, 1):
            layers += [nn.Conv2d(in_ch, 12, kernel_size=5, padding=2, stride=stride), self.ACTIVATIONS[activation]()]
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


class ConvNet(nn.Module):
    """The ConvNet of Inverting Gradients (Geiping et al. 2020) and Soteria's GS experiments.

    Eight 3x3 convolutions (padding 1), each followed by BatchNorm and ReLU, with widths
    ``w, 2w, 2w, 4w, 4w, 4w`` then ``4w, 4w`` after a 3x3 max-pool, a second 3x3 max-pool,
    and one linear layer on the flattened representation r of ``4w * (H//9) * (W//9)``
    features: 256 * 3 * 3 = 2,304 for ``width = 64`` on 32x32 (or 28x28) inputs. Default
    PyTorch initialisation; the published attacks use it untrained and in eval mode, where
    BatchNorm applies its running statistics (mean 0, variance 1 at initialisation).

    The published model lists one block twice, so it builds one convolution that it then
    discards; we build (and drop) the same extra convolution at the same place, so that
    ``torch.manual_seed(s)`` gives the published network's weights for model seed ``s``.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                 width: int = 64):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        channels, height, side = input_shape
        if height < 9 or side < 9:
            raise ValueError(f"ConvNet needs inputs of at least 9x9 pixels, got {height}x{side}")
        stages = ((width, 2 * width, 2 * width, 4 * width, 4 * width, 4 * width), (4 * width, 4 * width))
        layers, in_ch = [], channels
        for stage, outs in enumerate(stages):
            for k, out in enumerate(outs):
                if stage == 1 and k == 0:  # the published model's discarded duplicate (RNG only)
                    nn.Conv2d(in_ch, out, kernel_size=3, padding=1)
                layers += [nn.Conv2d(in_ch, out, kernel_size=3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
                in_ch = out
            layers.append(nn.MaxPool2d(3))
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(in_ch * (height // 9) * (side // 9), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


register_model("convnet")(ConvNet)
