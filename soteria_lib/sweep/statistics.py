"""How sure the sweep's numbers are (chapter 5): intervals for medians and ratios of medians over
images and seeds, for FedAvg accuracies over training seeds, and the matching rule built on them.

* A median over runs gets a 95 % percentile-bootstrap interval from ``scipy.stats.bootstrap``
  (2,000 resamples, a fixed generator, so a summary is reproducible). The percentile method
  rather than BCa: diverged runs have infinite MSE and cells of equal values are common, and BCa
  is undefined for both.
* The ratio of two cells' median MSEs, ``median(a) / median(b)``, resamples the runs both cells
  share (same image and seed: the same private image and model) in pairs, with every MSE above
  :data:`~soteria_lib.metrics.DIVERGED_MSE` counted as that threshold (so that two diverged
  cells compare as 1, not as inf / inf).
* The fraction of runs that rebuilt their image (:data:`~soteria_lib.metrics.REBUILT_PSNR`) gets
  a Wilson interval (``scipy.stats.binomtest``); the difference between two cells' fractions
  resamples their shared runs in pairs, as a ratio does.
* A FedAvg accuracy is the mean over training seeds with a Student-t interval; with three seeds
  a bootstrap has only ten distinct resamples.
* The matching rule: a Soteria setting *matches* a baseline when its mean accuracy is not lower
  beyond the interval, i.e. the upper end of the Welch 95 % interval of
  ``mean(Soteria) - mean(baseline)`` is >= 0 (with one seed each: the means themselves).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..metrics import DIVERGED_MSE

CONFIDENCE = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (``None`` where one value cannot give one)."""

    value: float
    low: float | None
    high: float | None
    n: int

    def excludes(self, reference: float) -> str | None:
        """``"above"`` or ``"below"`` when the whole interval lies on that side of ``reference``."""
        if self.low is None or self.high is None:
            return None
        return "above" if self.low > reference else "below" if self.high < reference else None


def _median(values, axis=-1):
    return np.median(values, axis=axis)


def _bootstrap(samples: tuple, statistic, paired: bool) -> tuple[float, float]:
    result = stats.bootstrap(samples, statistic, paired=paired, vectorized=True, confidence_level=CONFIDENCE,
                             n_resamples=RESAMPLES, method="percentile",
                             rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def median_interval(values) -> Estimate:
    """The median of ``values`` with its bootstrap interval (infinite values allowed)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values")
    median = float(np.median(values))
    if values.size == 1:
        return Estimate(median, None, None, 1)
    if np.all(values == values[0]):  # every resample has the same median
        return Estimate(median, median, median, values.size)
    with np.errstate(invalid="ignore"):
        low, high = _bootstrap((values,), _median, paired=False)
    return Estimate(median, low, high, values.size)


def capped(values) -> np.ndarray:
    """MSEs with everything above the divergence threshold (infinite included) counted as it."""
    return np.minimum(np.asarray(values, dtype=float), DIVERGED_MSE)


def _ratio(a, b, axis=-1):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.median(a, axis=axis) / np.median(b, axis=axis)


def ratio_interval(numerator, denominator) -> Estimate | None:
    """``median(numerator) / median(denominator)`` of capped MSEs, paired run by run (equal
    lengths, same order), with its paired bootstrap interval; ``None`` when undefined (0 / 0)."""
    a, b = capped(numerator), capped(denominator)
    if a.size != b.size or a.size == 0:
        raise ValueError(f"paired samples of equal, non-zero length needed, got {a.size} and {b.size}")
    value = float(_ratio(a, b))
    if math.isnan(value):
        return None
    if a.size == 1:
        return Estimate(value, None, None, 1)
    if np.all(a == a[0]) and np.all(b == b[0]):  # every resample gives the same ratio
        return Estimate(value, value, value, a.size)
    with np.errstate(invalid="ignore"):
        low, high = _bootstrap((a, b), _ratio, paired=True)
    return Estimate(value, low, high, a.size)


def proportion_interval(successes: int, n: int) -> Estimate:
    """``successes / n`` with its Wilson score interval."""
    if n <= 0:
        raise ValueError("no runs")
    found = stats.binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Estimate(successes / n, float(found.low), float(found.high), n)


def _mean_difference(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def difference_interval(first, second) -> Estimate:
    """``mean(first) - mean(second)`` of paired outcomes (equal lengths, same order) with its paired
    bootstrap interval."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.size != b.size or a.size == 0:
        raise ValueError(f"paired samples of equal, non-zero length needed, got {a.size} and {b.size}")
    value = float(_mean_difference(a, b))
    if a.size == 1:
        return Estimate(value, None, None, 1)
    if np.all(a - b == a[0] - b[0]):  # every resample gives the same difference
        return Estimate(value, value, value, a.size)
    low, high = _bootstrap((a, b), _mean_difference, paired=True)
    return Estimate(value, low, high, a.size)


def mean_interval(values, within: tuple[float, float] = (-np.inf, np.inf)) -> Estimate:
    """The mean with its Student-t interval (none from a single value), cut to the range ``within``
    the quantity can take (an accuracy's interval stops at 0 and 1)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values")
    mean = float(values.mean())
    if values.size == 1:
        return Estimate(mean, None, None, 1)
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, values.size - 1) * stats.sem(values))
    return Estimate(mean, max(mean - half, within[0]), min(mean + half, within[1]), values.size)


def difference_upper(soteria, baseline) -> float:
    """Upper end of the Welch interval of ``mean(soteria) - mean(baseline)`` (the difference of
    the means when either side has one value or neither varies)."""
    s, b = np.asarray(soteria, dtype=float), np.asarray(baseline, dtype=float)
    difference = float(s.mean() - b.mean())
    if s.size < 2 or b.size < 2:
        return difference
    vs, vb = s.var(ddof=1) / s.size, b.var(ddof=1) / b.size
    if vs + vb == 0:
        return difference
    dof = (vs + vb) ** 2 / (vs ** 2 / (s.size - 1) + vb ** 2 / (b.size - 1))
    return difference + float(stats.t.ppf((1 + CONFIDENCE) / 2, dof)) * math.sqrt(vs + vb)


def matches(soteria, baseline) -> bool:
    """The matching rule: Soteria's accuracies (one per seed) are not lower than the baseline's
    beyond the interval."""
    return difference_upper(soteria, baseline) >= 0


MATCHING_RULE = (
    "A Soteria setting matches a baseline setting when its FedAvg test accuracy (mean over training seeds) "
    f"is not lower beyond the interval: the upper end of the Welch {CONFIDENCE:.0%} interval of "
    "mean(Soteria) - mean(baseline) is at least 0. Each baseline is compared with the strongest Soteria "
    "setting (highest pruning rate) that matches it, chosen by accuracy alone, before any MSE is looked at.")
INTERVAL_RULE = (
    f"{CONFIDENCE:.0%} throughout: for medians and ratios of medians, percentile bootstrap over runs "
    f"(scipy.stats.bootstrap, {RESAMPLES} resamples; a ratio resamples the runs both cells share, as pairs, "
    f"with MSEs above {DIVERGED_MSE:g} counted as {DIVERGED_MSE:g}); for fractions of runs rebuilt, Wilson "
    "(scipy.stats.binomtest), and for their differences the paired bootstrap; for accuracies, Student-t over "
    "seeds.")
