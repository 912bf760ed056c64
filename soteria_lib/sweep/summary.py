"""From the results CSV to per-cell statistics and the verdict: Soteria against each baseline at
matched accuracy, for the plain attacker and the worst case (chapter 5's tables).

Rows are grouped by experiment (attack, dataset, scale, iteration budget, attack options) and,
within one, into cells: a defense setting against one attacker of the battery
(:mod:`soteria_lib.attacks.battery`). Every cell reports the median MSE with its bootstrap
interval over all its runs, diverged ones included (their MSE is large or infinite and sorts
last), and how many diverged. The *worst case* of a setting takes, run by run (same image and
seed), the lowest MSE any attacker reached, over the runs every attacker of that setting has. A
setting has a worst case only when it faced the whole battery its defense faces elsewhere in the
experiment (a pruning rate that only the plain attacker ran has none); with a grid, these are the
attackers the grid asks for (rows of cells it no longer has are reported beside, never mixed in).

Accuracies are FedAvg test accuracies over training seeds, from the cells of the same dataset
(MNIST's when a dataset has none, and the summary says so). Soteria is compared with each
baseline setting it matches (:data:`~.statistics.MATCHING_RULE`) by the ratio of median MSEs with
its interval (:data:`~.statistics.INTERVAL_RULE`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..attacks.battery import ATTACKERS
from ..data import DATASETS
from ..defenses import DefenseSetting
from ..metrics import DIVERGED_MSE, REBUILT_PSNR, is_rebuilt
from ..quantiles import quantile
from .accuracy import Accuracy, accuracy_dataset, read_accuracies
from .grid import Grid
from .results import RESULTS, canonical_json, read_rows, setting_of
from .statistics import (INTERVAL_RULE, MATCHING_RULE, Estimate, difference_interval, matches, median_interval,
                         proportion_interval, ratio_interval)

GROUP_COLUMNS = ("attack", "dataset", "scale", "max_iterations", "attack_options")
WORST = "worst case"
VIEWS = ("plain", WORST)  # the attackers the verdict reports
CONVENTIONS = {
    "mse": "mean squared error in [0, 1] pixel space (the headline)",
    "mse_normalized": "the same in the model's input space: the dataset's mean/std space for GS; DLG's "
                      "model reads [0, 1] pixels, so for DLG both columns coincide",
}
CAPPED_RULE = (
    "A diverged attack's MSE is unbounded (DLG's dummy is not clamped), so a ratio of two medians above "
    f"{DIVERGED_MSE:g} would compare explosion sizes, not privacy. Ratios count every MSE above "
    f"{DIVERGED_MSE:g} as {DIVERGED_MSE:g} (no better than an arbitrary image): a conservative choice.")
REBUILT_RULE = (
    f"A run rebuilt its image when its PSNR reaches {REBUILT_PSNR:g} dB (MSE at most "
    f"{10 ** (-REBUILT_PSNR / 10):g} in [0, 1] pixels). DLG's runs are all or nothing (a near-perfect image or "
    "an explosion), so the fraction of runs rebuilt reads them better than a median does; the difference "
    "is the baseline's fraction minus Soteria's, over the runs both share: above 0, Soteria leaks less.")
# Published figure (GS on CIFAR-10, untrained ConvNet-64, one image, MSE in normalised space),
# read off GS_defense.png in the authors' repository: pruning rate -> MSE.
PUBLISHED_GS_CIFAR10 = {
    "soteria": {40: 0.10, 50: 0.75, 60: 0.97, 70: 1.19, 80: 1.49},
    "prune": {40: 0.09, 50: 0.12, 60: 0.36, 70: 0.41, 80: 0.71},
}


@dataclass
class Cell:
    """One defense setting against one attacker (or :data:`WORST`)."""

    setting: DefenseSetting
    attacker: str
    runs: int
    expected: int | None  # runs the grid asks for (None: no grid given)
    diverged: int
    mse: Estimate
    mse_normalized: Estimate
    psnr_median: float
    ssim_median: float
    label_accuracy: float
    rebuilt: Estimate  # fraction of runs with PSNR >= REBUILT_PSNR
    by_run: dict = field(repr=False)  # (target_id, seed) -> row: what ratios pair

    def record(self) -> dict:
        return {"defense": self.setting.defense, "value": self.setting.value, "label": self.setting.label(),
                "attacker": self.attacker, "runs": self.runs, "expected": self.expected,
                "diverged": self.diverged, "mse": vars(self.mse), "mse_normalized": vars(self.mse_normalized),
                "psnr_median": self.psnr_median, "ssim_median": self.ssim_median,
                "label_accuracy": self.label_accuracy, "rebuilt": vars(self.rebuilt)}


@dataclass
class Comparison:
    """Soteria at matched accuracy against one baseline setting, per view: the ratio of median MSEs
    and the difference of the fractions of runs rebuilt."""

    baseline: DefenseSetting
    baseline_accuracy: Estimate
    soteria: DefenseSetting | None  # None: no Soteria setting matches
    soteria_accuracy: Estimate | None
    ratios: dict  # view -> Estimate | None
    rebuilt: dict = field(default_factory=dict)  # view -> Estimate | None: baseline's fraction - Soteria's

    def verdict(self, view: str, measure: str = "ratios") -> str:
        """What the interval of the ratio (``measure="ratios"``) or of the difference of fractions
        rebuilt (``"rebuilt"``) says, in words."""
        if self.soteria is None:
            return "no Soteria setting matches"
        estimate = getattr(self, measure).get(view)
        if estimate is None:
            return "no runs to compare"
        side = estimate.excludes(1.0 if measure == "ratios" else 0.0)
        return {"above": "Soteria leaks less", "below": "Soteria leaks more"}.get(side, "no difference resolved")

    def record(self) -> dict:
        return {"baseline": self.baseline.label(), "baseline_defense": self.baseline.defense,
                "baseline_value": self.baseline.value, "baseline_accuracy": vars(self.baseline_accuracy),
                "soteria": None if self.soteria is None else self.soteria.label(),
                "soteria_value": None if self.soteria is None else self.soteria.value,
                "soteria_accuracy": None if self.soteria_accuracy is None else vars(self.soteria_accuracy),
                "ratios": {v: None if r is None else vars(r) for v, r in self.ratios.items()},
                "verdicts": {v: self.verdict(v) for v in self.ratios},
                "rebuilt_differences": {v: None if r is None else vars(r) for v, r in self.rebuilt.items()},
                "rebuilt_verdicts": {v: self.verdict(v, "rebuilt") for v in self.rebuilt}}


@dataclass
class Group:
    params: dict
    accuracy_dataset: str | None
    settings: list[DefenseSetting]
    attackers: list[str]  # in battery order, WORST last when there is more than one attacker
    cells: dict  # (setting, attacker) -> Cell
    comparisons: list[Comparison]
    equal_rate: list[dict]
    cpu_seconds: float  # summed over the group's runs: its cost on dedicated cores

    def title(self, short: bool = False) -> str:
        """The experiment's name; ``short`` (figure panels) leaves out the scale and attack options."""
        p = self.params
        options = "" if p["attack_options"] == "{}" or short else f", options {p['attack_options']}"
        scale = "" if short else f"{p['scale']} scale, "
        name = DATASETS[p["dataset"]].title if p["dataset"] in DATASETS else p["dataset"]
        return f"{p['attack'].upper()} on {name} ({scale}{p['max_iterations']} iterations{options})"

    def cell(self, setting: DefenseSetting, attacker: str = "plain") -> Cell | None:
        return self.cells.get((setting, attacker))

    def accuracy(self, accuracies: dict, setting: DefenseSetting) -> Accuracy | None:
        return accuracies.get((self.accuracy_dataset, setting))

    def strongest_matched(self) -> DefenseSetting | None:
        """The highest Soteria rate that matched some baseline's accuracy: the setting the claim is
        judged at, chosen from accuracies alone, before any MSE is looked at."""
        matched = {c.soteria for c in self.comparisons if c.soteria is not None}
        return max(matched, key=lambda s: s.value, default=None)

    def undefended(self) -> DefenseSetting | None:
        return next((s for s in self.settings if s.defense == "none"), None)


def make_cell(setting: DefenseSetting, attacker: str, rows: list[dict], expected: int | None) -> Cell:
    return Cell(setting, attacker, len(rows), expected, sum(r["diverged"] for r in rows),
                median_interval([r["mse"] for r in rows]), median_interval([r["mse_normalized"] for r in rows]),
                quantile([r["psnr"] for r in rows], 0.5), quantile([r["ssim"] for r in rows], 0.5),
                sum(r["label_accuracy"] for r in rows) / len(rows),
                proportion_interval(sum(is_rebuilt(r["psnr"]) for r in rows), len(rows)),
                {(r["target_id"], r["seed"]): r for r in rows})


def worst_case(setting: DefenseSetting, cells: list[Cell]) -> Cell | None:
    """Run by run, the row of the attacker with the lowest MSE, over the runs all of them have."""
    shared = set.intersection(*(set(c.by_run) for c in cells))
    if not shared:
        return None
    rows = [min((c.by_run[key] for c in cells), key=lambda r: r["mse"]) for key in sorted(shared)]
    return make_cell(setting, WORST, rows, None)


def attackers_faced(key: tuple, settings: list[DefenseSetting], cells: dict, expected: Counter | None) -> dict:
    """The attackers each setting of a group faces: those the grid asks for, or without a grid
    those that ran."""
    if expected is None:
        return {s: {a for t, a in cells if t == s} for s in settings}
    return {s: {a for (*k, t, a), n in expected.items() if tuple(k) == key and t == s and n} for s in settings}


def worst_cases(cells: dict, faced: dict) -> dict:
    """A worst-case cell for each setting that faced its defense's whole battery (the union of the
    attackers its defense's settings faced); a setting that faced fewer gets none."""
    battery = {}
    for setting, names in faced.items():
        battery.setdefault(setting.defense, set()).update(names)
    found = {}
    for setting, names in faced.items():
        if names and names == battery[setting.defense]:
            worst = worst_case(setting, [c for (s, a), c in cells.items() if s == setting and a in names])
            if worst is not None:
                found[(setting, WORST)] = worst
    return found


def paired_rows(first: Cell | None, second: Cell | None) -> list[tuple[dict, dict]]:
    """The rows of the runs both cells have (same image and seed), in pairs."""
    if first is None or second is None:
        return []
    return [(first.by_run[k], second.by_run[k]) for k in sorted(set(first.by_run) & set(second.by_run))]


def paired_ratio(numerator: Cell | None, denominator: Cell | None) -> Estimate | None:
    """Median-MSE ratio over the runs both cells have."""
    pairs = paired_rows(numerator, denominator)
    return ratio_interval([a["mse"] for a, _ in pairs], [b["mse"] for _, b in pairs]) if pairs else None


def paired_rebuilt(soteria: Cell | None, baseline: Cell | None) -> Estimate | None:
    """The baseline's fraction of runs rebuilt minus Soteria's, over the runs both cells have."""
    pairs = paired_rows(baseline, soteria)
    return difference_interval([is_rebuilt(b["psnr"]) for b, _ in pairs],
                               [is_rebuilt(s["psnr"]) for _, s in pairs]) if pairs else None


def compare(group: Group, accuracies: dict) -> list[Comparison]:
    """Every baseline setting with an accuracy against the strongest Soteria setting that matches it."""
    def accuracy(setting):
        return group.accuracy(accuracies, setting)

    soteria = [s for s in group.settings if s.defense == "soteria" and accuracy(s) is not None]
    comparisons = []
    for base in group.settings:
        if base.defense in ("none", "soteria") or accuracy(base) is None:
            continue
        matched = [s for s in soteria if matches(accuracy(s).values, accuracy(base).values)]
        best = max(matched, key=lambda s: s.value, default=None)
        views = [view for view in VIEWS if group.cell(base, view) is not None]
        ratios = {view: paired_ratio(group.cell(best, view), group.cell(base, view)) for view in views}
        rebuilt = {view: paired_rebuilt(group.cell(best, view), group.cell(base, view)) for view in views}
        comparisons.append(Comparison(base, accuracy(base).mean, best, best and accuracy(best).mean, ratios, rebuilt))
    return comparisons


def equal_rate(group: Group) -> list[dict]:
    """Soteria against pruning at the same rate, plain attacker (the published figure's comparison)."""
    pairs = []
    for setting in group.settings:
        other = DefenseSetting("prune", setting.value)
        sot, pru = group.cell(setting), group.cell(other)
        if setting.defense == "soteria" and sot is not None and pru is not None:
            ratio = paired_ratio(sot, pru)
            pairs.append({"rate": setting.value, "mse_soteria": sot.mse.value, "mse_prune": pru.mse.value,
                          "mse_normalized_soteria": sot.mse_normalized.value,
                          "mse_normalized_prune": pru.mse_normalized.value,
                          "ratio": None if ratio is None else vars(ratio)})
    return pairs


def expected_runs(grid: Grid | None) -> Counter | None:
    """How many runs the grid asks of each (experiment, setting, attacker)."""
    if grid is None:
        return None
    return Counter((s.attack, s.dataset, s.scale, s.max_iterations, canonical_json(s.attack_options), s.setting,
                    s.attacker) for s in grid.reconstructions)


def attacker_order(names) -> list[str]:
    order = list(ATTACKERS)
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def summarize(csv_path: str | Path, fedavg_root: str | Path | None, grid: Grid | None = None,
              keep_first: bool = False) -> tuple[list[Group], dict]:
    """The groups of the results CSV, and the FedAvg accuracies found under ``fedavg_root`` (None: none).
    With ``grid``, every cell also says how many runs the grid asks of it (and cells it asks for
    that have no run yet appear with 0 runs in :func:`missing_cells`). A CSV that holds a run
    twice is refused (it would count twice), unless ``keep_first`` reads the first row of each."""
    rows = RESULTS.unique_rows(read_rows(csv_path), csv_path, keep_first)
    if not rows:
        raise ValueError(f"{csv_path} holds no results")
    if fedavg_root is not None and Path(fedavg_root).exists() and not Path(fedavg_root).is_dir():
        raise ValueError(f"FedAvg folder {fedavg_root} is not a folder (it holds one folder per FedAvg run)")
    accuracies = read_accuracies(fedavg_root) if fedavg_root is not None and Path(fedavg_root).is_dir() else {}
    expected = expected_runs(grid)
    grouped: dict[tuple, dict[tuple, list[dict]]] = {}
    for row in rows:
        key = tuple(row[c] for c in GROUP_COLUMNS)
        setting = setting_of(row)
        grouped.setdefault(key, {}).setdefault((setting, row["attacker"]), []).append(row)
    groups = []
    for key, by_cell in grouped.items():
        params = dict(zip(GROUP_COLUMNS, key))
        settings = sorted({s for s, _ in by_cell}, key=DefenseSetting.sort_key)
        attackers = attacker_order({a for _, a in by_cell})
        cells = {(s, a): make_cell(s, a, rows, None if expected is None else expected[(*key, s, a)])
                 for (s, a), rows in by_cell.items()}
        if len(attackers) > 1:
            cells.update(worst_cases(cells, attackers_faced(key, settings, cells, expected)))
            attackers.append(WORST)
        cpu = sum(r["cpu_seconds"] for rows in by_cell.values() for r in rows)
        group = Group(params, accuracy_dataset(params["dataset"], accuracies), settings, attackers, cells, [], [], cpu)
        group.comparisons, group.equal_rate = compare(group, accuracies), equal_rate(group)
        groups.append(group)
    groups.sort(key=lambda g: (g.params["attack"], g.params["dataset"] != "mnist", g.params["max_iterations"]))
    return groups, accuracies


def missing_cells(groups: list[Group], grid: Grid) -> list[dict]:
    """Cells the grid asks for that are not complete: experiment, setting, attacker, runs done and asked."""
    done = {(*(g.params[c] for c in GROUP_COLUMNS), s, a): c.runs for g in groups for (s, a), c in g.cells.items()}
    missing = []
    for key, count in sorted(expected_runs(grid).items(), key=_order):
        if done.get(key, 0) < count:
            missing.append({"attack": key[0], "dataset": key[1], "max_iterations": key[3], "setting": key[5].label(),
                            "attacker": key[6], "runs": done.get(key, 0), "expected": count})
    return missing


def _order(item):
    (attack, dataset, scale, budget, options, setting, attacker), _ = item
    rank = list(ATTACKERS).index(attacker) if attacker in ATTACKERS else len(ATTACKERS)
    return attack, dataset, budget, setting.sort_key(), rank


def to_json(groups: list[Group], accuracies: dict, csv_path, fedavg_root, missing: list[dict] | None = None) -> dict:
    """The machine-readable summary (written with :func:`soteria_lib.files.write_json`, which
    turns non-finite numbers into null; diverged counts say why)."""
    return {
        "csv": str(csv_path), "fedavg_dir": None if fedavg_root is None else str(fedavg_root),
        "diverged_mse_threshold": DIVERGED_MSE,
        "conventions": CONVENTIONS, "matching_rule": MATCHING_RULE, "interval_rule": INTERVAL_RULE,
        "capped_rule": CAPPED_RULE, "rebuilt_rule": REBUILT_RULE, "rebuilt_psnr": REBUILT_PSNR, "views": list(VIEWS),
        "fedavg": [a.record() for _, a in sorted(accuracies.items(), key=lambda i: (i[0][0], i[0][1].sort_key()))],
        "groups": [{**g.params, "accuracy_dataset": g.accuracy_dataset, "cpu_seconds": g.cpu_seconds,
                    "attackers": g.attackers,
                    "cells": [g.cells[(s, a)].record() for s in g.settings for a in g.attackers if (s, a) in g.cells],
                    "comparisons": [c.record() for c in g.comparisons], "equal_rate": g.equal_rate}
                   for g in groups],
        "incomplete_cells": missing,
        "published_gs_cifar10_mse_normalized": PUBLISHED_GS_CIFAR10,
    }
