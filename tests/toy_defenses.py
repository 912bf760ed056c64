"""Two toy defenses, each registered here and nowhere else (issue 25: a defense is one file).

* ``blur`` acts on the data the client trains on: a box blur of ``radius`` pixels (its strength)
  with ``passes`` repetitions (a knob of its own).
* ``widen`` acts on the model the client trains: one extra linear layer after the classifier,
  initialised to the identity, so the model computes the same function at the start.

Loaded by the command lines and sweep workers through ``SOTERIA_EXTENSIONS``
(:mod:`soteria_lib.extensions`), or by importing this file.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from soteria_lib.defenses import DEFENSES, Defense, Strength, register_defense


def _radius(value: float) -> float:
    if not (float(value) == int(value) and 1 <= value <= 5):
        raise ValueError(f"radius must be a whole number of pixels in [1, 5], got {value}")
    return float(value)


if "blur" not in DEFENSES:  # importable twice (by the tests and as an extension)

    @register_defense("blur", title="box blur", order=20, style=("tab:olive", "P"), acts_on=("data",),
                      strength=Strength("radius", "px", "r", _radius))
    @dataclass
    class Blur(Defense):
        """Train on the private images blurred by a (2 radius + 1)-pixel box filter, ``passes`` times."""

        radius: float = 1.0
        passes: int = 1

        def __post_init__(self):
            self.radius = _radius(self.radius)
            if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
                raise ValueError(f"passes must be an integer >= 1, got {self.passes!r}")

        def on_data(self, inputs, labels):
            size = 2 * int(self.radius) + 1
            x = inputs
            for _ in range(self.passes):
                x = F.avg_pool2d(F.pad(x, [int(self.radius)] * 4, mode="replicate"), size, stride=1)
            return x, labels

    @register_defense("widen", title="one more layer", order=21, style=("tab:gray", "X"), acts_on=("model",))
    @dataclass
    class Widen(Defense):
        """One extra identity-initialised linear layer after the classifier."""

        def on_model(self, model: nn.Module) -> nn.Module:
            classes = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
            extra = nn.Linear(classes, classes)
            with torch.no_grad():
                extra.weight.copy_(torch.eye(classes))
                extra.bias.zero_()
            return nn.Sequential(model, extra)
