"""FedAvg test accuracy per dataset and defense setting, over training seeds: the utility side of
every summary (chapter 5), read from the runs' ``metrics.json`` (:func:`soteria_lib.federated.read_results`).

Beside the mean and its interval, each setting says how far its training had levelled off: the
mean gain per round over the last quarter of its rounds (:func:`late_gain`), so that a
comparison of accuracies made before a plateau is visible as such (issue 26).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..defenses import DefenseSetting
from ..federated import read_results
from .results import setting_of
from .statistics import Estimate, mean_interval

FALLBACK_ACCURACY_DATASET = "mnist"


@dataclass
class Accuracy:
    """FedAvg test accuracy of one setting over training seeds."""

    dataset: str
    setting: DefenseSetting
    values: list[float]
    seeds: list[int]
    mean: Estimate
    model: str | None
    scale: str | None
    test_examples: int | None
    rounds: int | None
    diverged: int  # seeds whose training diverged (their value: the last finite global model's)
    # the largest epsilon over the seeds (delta in the runs' records): a DP-SGD run's; infinite for
    # a noise baseline that clips nothing per example; None where no privacy is claimed
    epsilon: float | None = None
    late_gain: float | None = None  # see late_gain(): whether training had levelled off


    def record(self) -> dict:
        return {"dataset": self.dataset, "defense": self.setting.defense, "value": self.setting.value,
                "label": self.setting.label(), "values": self.values, "seeds": self.seeds, "mean": vars(self.mean),
                "model": self.model, "scale": self.scale, "test_examples": self.test_examples, "rounds": self.rounds,
                "diverged": self.diverged,  # JSON has no infinity: an infinite epsilon is the string "inf"
                "epsilon": "inf" if self.epsilon is not None and math.isinf(self.epsilon) else self.epsilon,
                "late_gain": self.late_gain}


def epsilon_of(setting: DefenseSetting, runs: list[dict]) -> float | None:
    """What the runs' records say of the setting's privacy (see :attr:`Accuracy.epsilon`)."""
    budgets = [m["privacy"]["epsilon"] for m in runs if m.get("privacy")]
    if budgets:
        return max(budgets)
    return math.inf if setting.info.noise else None


def late_gain(runs: list[dict]) -> float | None:
    """Mean over the runs of ``(a_R - a_{R-k}) / k``, test accuracy ``a`` after round ``R`` (the
    last) and ``k = max(1, R // 4)`` rounds before: the accuracy still gained per round at the end
    (about 0 once training has levelled off). None without a history of at least 2 rounds."""
    gains = []
    for run in runs:
        history = run.get("history") or []
        if len(history) < 2:
            return None
        last = len(history) - 1
        k = max(1, last // 4)
        gains.append((history[last]["accuracy"] - history[last - k]["accuracy"]) / k)
    return sum(gains) / len(gains) if gains else None


def read_accuracies(root: str | Path) -> dict[tuple[str, DefenseSetting], Accuracy]:
    """Every FedAvg run under ``root``, by dataset and setting, over its training seeds (runs of a
    defense that is not registered are left out)."""
    found: dict[tuple, list[dict]] = {}
    for stored in read_results(root).values():
        try:
            setting = setting_of(stored)
        except ValueError:
            continue
        found.setdefault((stored["dataset"], setting), []).append(stored)
    accuracies = {}
    for (dataset, setting), runs in found.items():
        runs.sort(key=lambda m: m.get("seed", 0))
        values = [m["final_accuracy"] for m in runs]
        first = runs[0]
        accuracies[(dataset, setting)] = Accuracy(dataset, setting, values, [m.get("seed", 0) for m in runs],
                                                  mean_interval(values, within=(0.0, 1.0)), first.get("model"), first.get("scale"),
                                                  first.get("test_examples"), first.get("rounds"),
                                                  sum(m.get("diverged_round") is not None for m in runs),
                                                  epsilon_of(setting, runs), late_gain(runs))
    return accuracies


def accuracy_dataset(dataset: str, accuracies: dict) -> str | None:
    """The dataset whose FedAvg cells give ``dataset``'s accuracies: itself, else MNIST, else none."""
    available = {d for d, _ in accuracies}
    for candidate in (dataset, FALLBACK_ACCURACY_DATASET):
        if candidate in available:
            return candidate
    return None
