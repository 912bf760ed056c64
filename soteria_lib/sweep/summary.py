"""From the results CSV to per-cell statistics and Soteria's MSE ratios at matched accuracy
(chapter 5's tables).

Rows are grouped by experiment (attack, dataset, scale, iteration budget, attacker,
attack options) and, within one, by defense setting. Each cell reports the median and the
interquartile range (25th and 75th percentiles, linear interpolation) of both MSE conventions
over all its runs, diverged ones included (their MSE is large or infinite and sorts last), and
how many diverged.

Soteria is compared with each baseline at matched accuracy (:data:`MATCHING_RULE`); the
accuracies come from the FedAvg cells of the same dataset, or MNIST's when a dataset has none
(the summary then says so).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..defenses import DefenseSetting
from ..federated import read_results
from ..quantiles import quantile
from ..metrics import DIVERGED_MSE
from .results import read_rows

GROUP_COLUMNS = ("attack", "dataset", "scale", "max_iterations", "attacker", "attack_options")
METRICS = ("mse", "mse_normalized")
FALLBACK_ACCURACY_DATASET = "mnist"
CONVENTIONS = {
    "mse": "mean squared error in [0, 1] pixel space (the headline)",
    "mse_normalized": "the same in the model's input space: the dataset's mean/std space for GS; DLG's "
                      "model reads [0, 1] pixels, so for DLG both columns coincide",
}
MATCHING_RULE = (
    "Each setting's utility is the final test accuracy of its FedAvg cell. For every baseline setting "
    "(pruning or noise) with accuracy a, the matched Soteria setting is the one whose accuracy is closest "
    "to a and not lower; among equally close ones, the lowest pruning rate (the mildest). The ratio is "
    "Soteria's median MSE over the baseline's: above 1, Soteria leaks less at no loss of accuracy. When no "
    "Soteria setting is at least as accurate, there is no ratio.")
CAPPED_RULE = (
    "A diverged attack's MSE is unbounded (DLG's dummy is not clamped), so a ratio of two medians above "
    f"{DIVERGED_MSE:g} compares explosion sizes, not privacy. The capped ratio counts every MSE above "
    f"{DIVERGED_MSE:g} as {DIVERGED_MSE:g} (no better than an arbitrary image): a conservative lower bound.")
# Published figure (GS on CIFAR-10, untrained ConvNet-64, one image, MSE in normalised space),
# read off GS_defense.png in the authors' repository: pruning rate -> MSE.
PUBLISHED_GS_CIFAR10 = {
    "soteria": {40: 0.10, 50: 0.75, 60: 0.97, 70: 1.19, 80: 1.49},
    "prune": {40: 0.09, 50: 0.12, 60: 0.36, 70: 0.41, 80: 0.71},
}


@dataclass(frozen=True)
class Quartiles:
    q1: float
    median: float
    q3: float


@dataclass
class Cell:
    setting: DefenseSetting
    runs: int
    diverged: int
    mse: Quartiles
    mse_normalized: Quartiles
    psnr_median: float
    ssim_median: float
    label_accuracy: float
    accuracy: float | None  # FedAvg final test accuracy of this setting


@dataclass
class Match:
    baseline: DefenseSetting
    baseline_accuracy: float
    soteria: DefenseSetting | None
    soteria_accuracy: float | None
    ratio_mse: float | None
    ratio_capped: float | None
    ratio_mse_normalized: float | None


@dataclass
class Group:
    params: dict
    accuracy_dataset: str | None
    cells: list[Cell]
    matches: list[Match]
    equal_rate: list[dict]
    cpu_seconds: float  # summed over the group's runs: its cost on dedicated cores


def quartiles(values: list[float]) -> Quartiles:
    return Quartiles(quantile(values, 0.25), quantile(values, 0.5), quantile(values, 0.75))


def capped_ratio(numerator: float, denominator: float) -> float | None:
    """The ratio of medians with every MSE above the divergence threshold counted as the threshold
    (the median of capped values is the capped median)."""
    return ratio(min(numerator, DIVERGED_MSE), min(denominator, DIVERGED_MSE))


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``; None when undefined (both infinite, or 0 / 0)."""
    if (math.isinf(numerator) and math.isinf(denominator)) or (numerator == 0 and denominator == 0):
        return None
    return math.inf if denominator == 0 else numerator / denominator


def make_cell(setting: DefenseSetting, rows: list[dict], accuracy: float | None) -> Cell:
    return Cell(setting, len(rows), sum(r["diverged"] for r in rows),
                quartiles([r["mse"] for r in rows]), quartiles([r["mse_normalized"] for r in rows]),
                quantile([r["psnr"] for r in rows], 0.5), quantile([r["ssim"] for r in rows], 0.5),
                sum(r["label_accuracy"] for r in rows) / len(rows), accuracy)


def match_soteria(cells: list[Cell]) -> list[Match]:
    """Every baseline cell with an accuracy, paired with its matched Soteria cell (:data:`MATCHING_RULE`)."""
    soteria = [c for c in cells if c.setting.defense == "soteria" and c.accuracy is not None]
    matches = []
    for base in cells:
        if base.setting.defense in ("none", "soteria") or base.accuracy is None:
            continue
        eligible = [c for c in soteria if c.accuracy >= base.accuracy]
        best = min(eligible, key=lambda c: (c.accuracy - base.accuracy, c.setting.value), default=None)
        if best is None:
            matches.append(Match(base.setting, base.accuracy, None, None, None, None, None))
            continue
        matches.append(Match(base.setting, base.accuracy, best.setting, best.accuracy,
                             ratio(best.mse.median, base.mse.median),
                             capped_ratio(best.mse.median, base.mse.median),
                             ratio(best.mse_normalized.median, base.mse_normalized.median)))
    return matches


def equal_rate(cells: list[Cell]) -> list[dict]:
    """Soteria against pruning at the same pruning rate (the published figure's comparison)."""
    by_rate = {c.setting.value: c for c in cells if c.setting.defense == "prune"}
    pairs = []
    for cell in cells:
        other = by_rate.get(cell.setting.value)
        if cell.setting.defense == "soteria" and other is not None:
            pairs.append({"rate": cell.setting.value, "mse_soteria": cell.mse.median, "mse_prune": other.mse.median,
                          "ratio_mse": ratio(cell.mse.median, other.mse.median),
                          "ratio_capped": capped_ratio(cell.mse.median, other.mse.median),
                          "ratio_mse_normalized": ratio(cell.mse_normalized.median, other.mse_normalized.median)})
    return pairs


def read_accuracies(root: str | Path) -> dict[tuple[str, DefenseSetting], dict]:
    """Every FedAvg run under ``root``: ``(dataset, setting) -> metrics.json`` without its history
    (runs of a defense that is not registered are left out)."""
    cells = {}
    for name, stored in read_results(root).items():
        stored.pop("history", None)
        try:
            setting = DefenseSetting.of(stored["defense"], stored.get("pruning_rate"), stored.get("noise"))
        except ValueError:
            continue
        cells[(stored["dataset"], setting)] = {**stored, "path": str(Path(root) / name / "metrics.json")}
    return cells


def accuracy_dataset(dataset: str, accuracies: dict) -> str | None:
    """The dataset whose FedAvg cells give ``dataset``'s accuracies: itself, else MNIST, else none."""
    available = {d for d, _ in accuracies}
    for candidate in (dataset, FALLBACK_ACCURACY_DATASET):
        if candidate in available:
            return candidate
    return None


def summarize(csv_path: str | Path, fedavg_root: str | Path) -> tuple[list[Group], dict]:
    """The groups of the results CSV, and the FedAvg cells found under ``fedavg_root``."""
    rows = read_rows(csv_path)
    if not rows:
        raise ValueError(f"{csv_path} holds no results")
    accuracies = read_accuracies(fedavg_root) if Path(fedavg_root).is_dir() else {}
    grouped: dict[tuple, dict[DefenseSetting, list[dict]]] = {}
    for row in rows:
        key = tuple(row[c] for c in GROUP_COLUMNS)
        setting = DefenseSetting.of(row["defense"], row["pruning_rate"], row["noise"])
        grouped.setdefault(key, {}).setdefault(setting, []).append(row)
    groups = []
    for key, by_setting in grouped.items():
        params = dict(zip(GROUP_COLUMNS, key))
        source = accuracy_dataset(params["dataset"], accuracies)
        cells = [make_cell(s, by_setting[s], accuracies.get((source, s), {}).get("final_accuracy"))
                 for s in sorted(by_setting, key=DefenseSetting.sort_key)]
        cpu = sum(r["cpu_seconds"] for rows in by_setting.values() for r in rows)
        groups.append(Group(params, source, cells, match_soteria(cells), equal_rate(cells), cpu))
    return groups, accuracies


def fedavg_records(accuracies: dict) -> list[dict]:
    """The FedAvg cells, ordered by dataset and setting, with the fields a reader needs."""
    ordered = sorted(accuracies.items(), key=lambda item: (item[0][0], item[0][1].sort_key()))
    return [{"dataset": dataset, "defense": setting.defense, "value": setting.value,
             "final_accuracy": m["final_accuracy"], "standard_error": accuracy_standard_error(m),
             "test_examples": m.get("test_examples"), "rounds": m.get("rounds"), "clients": m.get("clients"),
             "scale": m.get("scale"), "model": m.get("model"), "path": m["path"]}
            for (dataset, setting), m in ordered]


def accuracy_standard_error(metrics: dict) -> float | None:
    """The binomial standard error sqrt(a (1 - a) / n) of a test accuracy a over n test examples:
    the test set's share of the noise (training noise, e.g. another thread count, comes on top)."""
    n, accuracy = metrics.get("test_examples"), metrics["final_accuracy"]
    return math.sqrt(accuracy * (1 - accuracy) / n) if n else None


def to_json(groups: list[Group], accuracies: dict, csv_path, fedavg_root) -> dict:
    """The machine-readable summary (written with :func:`soteria_lib.files.write_json`, which
    turns non-finite numbers into null; diverged counts say why)."""
    return {
        "csv": str(csv_path), "fedavg_dir": str(fedavg_root), "diverged_mse_threshold": DIVERGED_MSE,
        "conventions": CONVENTIONS, "matching_rule": MATCHING_RULE, "capped_rule": CAPPED_RULE,
        "fedavg": fedavg_records(accuracies),
        "groups": [{**g.params, "accuracy_dataset": g.accuracy_dataset, "cpu_seconds": g.cpu_seconds,
                    "cells": [asdict(c) for c in g.cells],
                    "matched": [asdict(m) for m in g.matches], "equal_rate": g.equal_rate} for g in groups],
        "published_gs_cifar10_mse_normalized": PUBLISHED_GS_CIFAR10,
    }
