"""Percentiles with one rule for the whole library: NumPy's default linear interpolation.

For sorted values v_0 <= ... <= v_{n-1} and a rate p in percent, with position
h = p / 100 (n - 1), the percentile is

    v_{floor h} + (h - floor h) (v_{floor h + 1} - v_{floor h}).

Soteria's threshold tau (chapter 4, equation 4.3), magnitude pruning's threshold (chapter 5)
and the sweep's medians and quartiles (chapter 5's tables) all use it. Infinite values are
allowed: where the two neighbours are equal, or the position falls on one of them, that value
is returned, so an infinite neighbour never turns the result into NaN.
"""
from __future__ import annotations

from typing import Sequence

import torch


def percentile(values: torch.Tensor, rate: float) -> torch.Tensor:
    """The ``rate``-th percentile of all entries of ``values``, in float64, as a 0-d tensor."""
    ordered = torch.sort(values.detach().flatten().to(torch.float64)).values
    position = rate / 100.0 * (ordered.numel() - 1)
    low = int(position)
    high = min(low + 1, ordered.numel() - 1)
    fraction = position - low
    a, b = ordered[low], ordered[high]
    if fraction == 0 or bool(a == b):
        return a
    return a + (b - a) * fraction


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (``q`` in [0, 1]) of a list of floats; NaN counts as ``inf``."""
    data = torch.tensor([float("inf") if v != v else float(v) for v in values], dtype=torch.float64)
    return float(percentile(data, 100.0 * q))
