"""A name -> builder registry for defenses, plus the helpers every defense shares."""
from __future__ import annotations

from typing import Callable

import torch

DEFENSES: dict[str, Callable] = {}
ALIASES = {"ours": "soteria", "no": "none"}


def register_defense(name: str):
    def wrap(builder):
        DEFENSES[name] = builder
        return builder
    return wrap


def get_defense(name: str, **params):
    """Build the defense registered as ``name`` (aliases: ``ours`` = ``soteria``, ``no`` = ``none``)."""
    key = ALIASES.get(name, name)
    if key not in DEFENSES:
        known = sorted(set(DEFENSES) | set(ALIASES))
        raise ValueError(f"unknown defense {name!r}; choose one of {known}")
    return DEFENSES[key](**params)


def check_rate(pruning_rate: float) -> float:
    """A pruning rate is a percentage in [0, 100)."""
    rate = float(pruning_rate)
    if not 0.0 <= rate < 100.0:
        raise ValueError(f"pruning_rate must be a percentage in [0, 100), got {pruning_rate}")
    return rate


def percentile(values: torch.Tensor, rate: float) -> torch.Tensor:
    """NumPy's default (linear) percentile of ``values`` at ``rate`` percent, as a 0-d tensor."""
    flat = values.detach().flatten().to(torch.float64)
    sorted_values = torch.sort(flat).values
    position = rate / 100.0 * (flat.numel() - 1)
    low = int(position)
    high = min(low + 1, flat.numel() - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction
