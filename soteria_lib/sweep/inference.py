"""Inference that reads the sweep's design (chapter 5): runs cluster by model seed, then image.

A reconstruction cell is 10 images on each of several random models (seeds), and the seed
decides much of the outcome (one sigmoid LeNet lets DLG rebuild 1 image in 10, another 9 in 10).
So every interval here resamples in two stages, seeds first and then images within each drawn
seed (a cluster bootstrap; Davison and Hinkley 1997, section 3.8), and every comparison pairs
the two defenses' runs on the same seed and image.

* :func:`hodges_lehmann`: the paired effect, the median of the Walsh averages of the per-image
  differences (in dB of PSNR, so a ratio of errors); robust to the all-or-nothing runs of DLG.
* :func:`two_stage_interval`: its percentile interval and a bootstrap p-value (two-sided,
  ``2 min(P*(T* <= 0), P*(T* >= 0))``), and the same for shares of runs rebuilt.
* :func:`wilcoxon_p`: the signed-rank test of the paired differences, for reference (it treats
  the runs as independent, which the two-stage bootstrap does not).
* :func:`newcombe_interval` and :func:`mcnemar_p`: the difference of two paired proportions
  (runs rebuilt) with Newcombe's hybrid score interval (method 10 of Newcombe, Stat. Med. 1998)
  and the exact McNemar test on the discordant pairs.
* :func:`envelope`: where the bootstrap has nothing to resample (every run agrees), the exact
  interval (Wilson for a share, Newcombe for a paired difference, with McNemar's p) widens it; a
  difference is resolved only where the envelope excludes 0 over at least :data:`MIN_SEEDS` seeds.
* :func:`holm`: Holm's step-down adjustment of a family of p-values fixed before the runs; the
  family's intervals are Bonferroni intervals (level ``1 - alpha / m``), which agree with Holm's
  first step and are conservative for the others.
* :func:`frontier` and :func:`non_inferior`: a defense family's settings that no other setting of
  the family beats on both accuracy and leakage, and the accuracy rule behind "at no cost in
  accuracy": the lower end of the one-sided 95 % interval of the accuracy difference above
  ``-margin`` (a margin fixed before the runs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

RESAMPLES = 2000
SEED = 0
ALPHA = 0.05
MIN_SEEDS = 3  # a difference is resolved only over at least this many model seeds (the design's 3)


@dataclass(frozen=True)
class Inference:
    """A point estimate, its interval at ``level``, a p-value against 0 (None where it has none) and
    the numbers of model seeds and runs it rests on."""

    value: float
    low: float | None
    high: float | None
    p: float | None
    level: float
    seeds: int
    n: int

    def side(self) -> str | None:
        """``"above"`` or ``"below"`` when the interval excludes 0 on that side and rests on at least
        :data:`MIN_SEEDS` model seeds (fewer cannot show that the seeds agree)."""
        if self.low is None or self.high is None or self.seeds < MIN_SEEDS:
            return None
        return "above" if self.low > 0 else "below" if self.high < 0 else None


def envelope(bootstrap: Inference, low: float, high: float, p: float | None = None) -> Inference:
    """``bootstrap`` with the wider of its interval and an exact one (``low``, ``high``) for the same
    estimate, and the larger of the two p-values. The two-stage bootstrap respects the clusters but
    has nothing to resample where every run agrees (a zero-width interval at any n); the exact
    interval treats runs as independent but never collapses. The envelope is conservative on both
    counts."""
    ps = [q for q in (bootstrap.p, p) if q is not None]
    return Inference(bootstrap.value, min(bootstrap.low, low), max(bootstrap.high, high), max(ps) if ps else None,
                     bootstrap.level, bootstrap.seeds, bootstrap.n)


def hodges_lehmann(differences: Sequence[float]) -> float:
    """The median of the Walsh averages ``(d_i + d_j) / 2``, ``i <= j``: the one-sample
    Hodges-Lehmann estimate. Infinite differences (a perfect rebuild has infinite PSNR) are clipped
    by the caller."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("no differences")
    i, j = np.triu_indices(d.size)
    return float(np.median((d[i] + d[j]) / 2))


def _resample(clusters: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    chosen = rng.integers(0, len(clusters), len(clusters))
    return np.concatenate([clusters[c][rng.integers(0, clusters[c].size, clusters[c].size)] for c in chosen])


def two_stage_interval(by_seed: Mapping[int, Sequence[float]], statistic: Callable[[np.ndarray], float],
                       level: float = 1 - ALPHA, resamples: int = RESAMPLES, seed: int = SEED) -> Inference:
    """``statistic`` of all values with its two-stage (seeds, then images) percentile interval and
    bootstrap p-value, ``2 (1 + #{draws on the far side of 0}) / (resamples + 1)`` (never 0: a
    bootstrap cannot show more than its resamples allow). With one seed the first stage is void
    and this is the ordinary bootstrap over images (say so where it is printed)."""
    clusters = [np.asarray(v, dtype=float) for _, v in sorted(by_seed.items()) if len(v)]
    if not clusters:
        raise ValueError("no values")
    pooled = np.concatenate(clusters)
    value = float(statistic(pooled))
    floor = min(1.0, 2 / (resamples + 1))
    if pooled.size == 1 or np.all(pooled == pooled[0]):
        return Inference(value, value, value, None if pooled.size == 1 else (1.0 if value == 0 else floor),
                         level, len(clusters), pooled.size)
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(_resample(clusters, rng)) for _ in range(resamples)])
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    p = min(1.0, 2 * (1 + min(int(np.sum(draws <= 0)), int(np.sum(draws >= 0)))) / (resamples + 1))
    return Inference(value, float(low), float(high), p, level, len(clusters), pooled.size)


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (None when all are 0)."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0 or np.all(d == 0):
        return None
    return float(stats.wilcoxon(d, zero_method="wilcox").pvalue)


def wilson(successes: int, n: int, level: float = 1 - ALPHA) -> tuple[float, float]:
    """Wilson's score interval of a share of ``n`` independent runs."""
    found = stats.binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return float(found.low), float(found.high)


def newcombe_interval(first: Sequence[bool], second: Sequence[bool], level: float = 1 - ALPHA) -> Inference:
    """``P(first) - P(second)`` over paired runs, with Newcombe's hybrid score interval (method 10)
    and the exact McNemar p-value."""
    a_, b_ = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if a_.size != b_.size or a_.size == 0:
        raise ValueError(f"paired outcomes of equal, non-zero length needed, got {a_.size} and {b_.size}")
    n = a_.size
    both, only_first, only_second = int(np.sum(a_ & b_)), int(np.sum(a_ & ~b_)), int(np.sum(~a_ & b_))
    neither = n - both - only_first - only_second
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = wilson(both + only_first, n, level)
    l2, u2 = wilson(both + only_second, n, level)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    phi = (both * neither - only_first * only_second) / math.sqrt(margins) if margins else 0.0
    diff = p1 - p2
    low = diff - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = diff + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return Inference(diff, max(low, -1.0), min(high, 1.0), mcnemar_p(only_first, only_second), level, 0, n)


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs split as a fair coin would."""
    discordant = only_first + only_second
    return 1.0 if discordant == 0 else float(stats.binomtest(only_first, discordant, 0.5).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the given order (None stays None and is not counted)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m, adjusted, running = len(indexed), [None] * len(p_values), 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def frontier(points: Sequence[tuple[object, float, float]]) -> list[object]:
    """The settings ``(key, accuracy, leakage)`` that no other beats on both counts (at least as
    accurate and at most as leaky, one of them strictly), by accuracy, lowest first."""
    kept = []
    for key, accuracy, leakage in points:
        beaten = any(a >= accuracy and lk <= leakage and (a > accuracy or lk < leakage) for _, a, lk in points)
        if not beaten:
            kept.append((accuracy, key))
    return [key for _, key in sorted(kept, key=lambda item: item[0])]


def non_inferior(candidate: Sequence[float], reference: Sequence[float], margin: float,
                 level: float = 1 - ALPHA) -> tuple[bool, float]:
    """Whether ``mean(candidate) - mean(reference)`` is above ``-margin`` at one-sided ``level``
    (Welch), and the lower end of that interval (the difference itself with one value each)."""
    c, r = np.asarray(candidate, dtype=float), np.asarray(reference, dtype=float)
    difference = float(c.mean() - r.mean())
    if c.size < 2 or r.size < 2:
        return difference > -margin, difference
    vc, vr = c.var(ddof=1) / c.size, r.var(ddof=1) / r.size
    if vc + vr == 0:
        return difference > -margin, difference
    dof = (vc + vr) ** 2 / (vc ** 2 / (c.size - 1) + vr ** 2 / (r.size - 1))
    lower = difference - float(stats.t.ppf(level, dof)) * math.sqrt(vc + vr)
    return lower > -margin, lower
