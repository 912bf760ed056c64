"""The verdict a reviewer can check (chapter 5): each defense against the attackers that know it, on
the model it trains, read image by image, with the primary comparisons fixed before the runs.

A grid's ``[verdict]`` table fixes, before any run, the headline Soteria setting, the baseline
defenses it is compared with, the attacks and protocol of the primary comparisons (the attacked
model's state and the client's local steps), the PSNR thresholds and the accuracy margins::

    [verdict]
    soteria = 80                       # the headline setting's strength (Soteria's pruning rate)
    baselines = ["prune", "dp-gaussian", "dp-sgd"]
    attacks = ["dlg"]                  # the attacks in the primary family (default: every attack)
    model_state = "init"
    thresholds = [15, 20]              # dB: a run rebuilt its image at or above
    primary_threshold = 20
    margins = {mnist = 0.01, cifar10 = 0.02}   # accuracy: non-inferiority margin

**Measures.** Per run (a model seed and an image), the attacker's PSNR, clipped below at the
trivial guess (an image of the dataset's mean colour: an attack that does no better has learnt
nothing) and above at :data:`PSNR_CEILING`; a run counts as rebuilt by its own PSNR, never by the
floor (a trivial guess that happens to reach a threshold has rebuilt nothing). Per setting, the
*worst case* over the attackers that faced it takes, run by run, the attacker with the highest
PSNR. A cell reports its share of runs rebuilt at each threshold and its median PSNR, with
two-stage intervals (seeds, then images; :mod:`.inference`); a share's interval is widened to
Wilson's where the bootstrap has nothing to resample (every run agrees).

**Primary comparisons.** For each attack, dataset and baseline defense B: among B's settings
whose mean FedAvg accuracy is within the dataset's margin of the headline Soteria setting's
(B's mean at least Soteria's minus the margin), the strongest; chosen from accuracies alone,
before any reconstruction is read (if no setting qualifies, the most accurate one, flagged). The
one-sided non-inferiority test (:func:`~.inference.non_inferior`) does not choose: with three
training seeds it accepts no setting at these margins, not even no defense; it is reported
beside each accuracy, and only it may support "at no cost in accuracy". The endpoint: B's share
of runs rebuilt at the primary threshold minus Soteria's, worst case, paired by run (above 0:
Soteria leaks less), with its two-stage interval at the Bonferroni level of the family, widened to
Newcombe's paired interval, its p-value the larger of the bootstrap's and McNemar's, Holm-adjusted
over the planned family; resolved only over at least three model seeds
(:func:`~.inference.envelope`). Read against the grid (:class:`Design`), a sweep still running
is read as unfinished: a worst case waits for every attacker of its setting, a baseline for the
accuracies of all its settings and Soteria's, and a missing comparison counts as p = 1.
Secondary, exploratory: the Hodges-Lehmann paired PSNR difference (B minus Soteria, dB) with
Wilcoxon's p, Newcombe's interval and McNemar's p for the paired shares, every other protocol
(trained models, several local steps) and every other pair of settings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..attacks.battery import ATTACKERS
from ..data import DATASETS
from ..defenses import DefenseSetting, defense_info
from .inference import (ALPHA, Inference, envelope, frontier, hodges_lehmann, holm, newcombe_interval,
                        two_stage_interval, wilcoxon_p, wilson)

EXPERIMENT = ("attack", "dataset", "scale", "max_iterations", "attack_options", "model", "model_options",
              "input_space", "model_state", "local_steps")
WORST = "worst case"
POST_HOC = "worst case, sensitivity analysis"  # the worst case over every attacker asked, where the grid
# asks for attackers beyond the plan's (added after the runs had been read: a sensitivity analysis)
PSNR_CEILING = 60.0  # dB: beyond, a reconstruction is exact to float32 rounding
MARGINS = {"mnist": 0.01, "cifar10": 0.02}  # accuracy points a defense may cost and still count as free


SYMBOLS = {"sigma": "σ", "noise_multiplier": "z"}  # how the book writes a noise defense's strength


def name(setting: DefenseSetting) -> str:
    """A setting as the book writes it: ``Soteria 80 %``, ``Gaussian noise σ = 0.01``, ``no defense``."""
    strength = setting.info.strength
    if setting.defense == "none" or strength is None:
        return "no defense" if setting.defense == "none" else setting.info.title
    if strength.unit == "%":
        return f"{setting.info.title} {setting.value:g} %"
    return f"{setting.info.title} {SYMBOLS.get(strength.setting, strength.setting)} = {setting.value:g}"


def protocol(params: dict) -> str:
    """An experiment as the book writes it: ``GS on CIFAR-10, global model after 20 rounds``."""
    state = ("initial model" if params["model_state"] == "init"
             else f"global model after {params['model_state'].split(':')[1]} rounds")
    steps = "" if params["local_steps"] == 1 else f", {params['local_steps']} local steps"
    data = DATASETS[params["dataset"]].title if params["dataset"] in DATASETS else params["dataset"]
    return f"{params['attack'].upper()} on {data}, {state}{steps}"


class VerdictError(ValueError):
    """A ``[verdict]`` table that cannot be used; one line."""


@dataclass(frozen=True)
class Plan:
    """The primary comparisons, fixed in the grid before the runs."""

    soteria: DefenseSetting
    baselines: tuple[str, ...]
    attacks: tuple[str, ...] | None = None  # None: every attack
    attackers: tuple[str, ...] | None = None  # the worst case's attackers, fixed before the runs (None: all asked)
    model_state: str = "init"
    local_steps: int = 1
    thresholds: tuple[float, ...] = (15.0, 20.0)
    primary_threshold: float = 20.0
    margins: dict = field(default_factory=lambda: dict(MARGINS))

    @classmethod
    def from_table(cls, table: dict) -> "Plan":
        allowed = {"soteria", "baselines", "attacks", "attackers", "model_state", "local_steps", "thresholds",
                   "primary_threshold", "margins"}
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise VerdictError(f"verdict: unknown key {unknown[0]!r}; allowed: {sorted(allowed)}")
        try:
            soteria = DefenseSetting("soteria", float(table["soteria"]))
            baselines = tuple(defense_info(name).name for name in table["baselines"])
        except (KeyError, TypeError, ValueError) as exc:
            raise VerdictError(f"verdict: soteria (a pruning rate) and baselines (defense names) are needed ({exc})")
        thresholds = tuple(float(t) for t in table.get("thresholds", (15, 20)))
        primary = float(table.get("primary_threshold", 20))
        if primary not in thresholds:
            raise VerdictError(f"verdict: primary_threshold {primary:g} is not among thresholds {list(thresholds)}")
        attacks = tuple(str(a) for a in table["attacks"]) if "attacks" in table else None
        attackers = tuple(str(a) for a in table["attackers"]) if "attackers" in table else None
        unknown = sorted(set(attackers or ()) - set(ATTACKERS))
        if unknown:
            raise VerdictError(f"verdict: unknown attacker {unknown[0]!r}; choose among {list(ATTACKERS)}")
        return cls(soteria, baselines, attacks, attackers, str(table.get("model_state", "init")),
                   int(table.get("local_steps", 1)), thresholds, primary,
                   {str(k): float(v) for k, v in table.get("margins", MARGINS).items()})

    def is_primary(self, params: dict) -> bool:
        """Whether an experiment (its parameters) belongs to the primary family."""
        return ((self.attacks is None or params["attack"] in self.attacks)
                and (params["model_state"], params["local_steps"]) == (self.model_state, self.local_steps))


def raw_psnr(row: dict) -> float:
    """The run's PSNR (a diverged run's NaN as minus infinity)."""
    return row["psnr"] if not math.isnan(row["psnr"]) else -math.inf


def effective_psnr(row: dict) -> float:
    """The run's PSNR clipped to [the trivial guess's PSNR, :data:`PSNR_CEILING`]."""
    floor = -10 * math.log10(row["mse_trivial"]) if row["mse_trivial"] else -math.inf
    return min(max(raw_psnr(row), floor), PSNR_CEILING)


def rebuilt(row: dict, threshold: float) -> bool:
    """Whether the run rebuilt its image: its own PSNR at or above ``threshold``."""
    return raw_psnr(row) >= threshold


@dataclass
class Cell:
    """One defense setting against one attacker (or :data:`WORST`) in one experiment."""

    setting: DefenseSetting
    attacker: str
    by_run: dict  # (seed, target_id) -> row
    rebuilt: dict  # threshold -> Inference (share of runs)
    psnr: Inference  # median effective PSNR
    effective_rate: float | None

    def psnr_of(self, key) -> float:
        return effective_psnr(self.by_run[key])

    def record(self) -> dict:
        return {"setting": self.setting.label(), "defense": self.setting.defense,
                "settings": self.setting.settings(), "attacker": self.attacker, "runs": len(self.by_run),
                "seeds": len({k[0] for k in self.by_run}), "rebuilt": {f"{t:g}": vars(e) for t, e in self.rebuilt.items()},
                "median_psnr": vars(self.psnr), "effective_rate": self.effective_rate}


def _by_seed(values: dict) -> dict:
    grouped: dict[int, list] = {}
    for (seed, _), value in sorted(values.items()):
        grouped.setdefault(seed, []).append(value)
    return grouped


def _share(hits: dict) -> Inference:
    """A share of runs rebuilt: two-stage interval, widened to Wilson's where narrower."""
    found = two_stage_interval(_by_seed({k: float(v) for k, v in hits.items()}), np.mean)
    return envelope(found, *wilson(sum(hits.values()), len(hits)))


def make_cell(setting: DefenseSetting, attacker: str, rows: list[dict], thresholds) -> Cell:
    by_run = {(r["seed"], r["target_id"]): r for r in rows}
    psnr = {k: effective_psnr(r) for k, r in by_run.items()}
    shares = {t: _share({k: rebuilt(r, t) for k, r in by_run.items()}) for t in thresholds}
    rates = [r["effective_rate"] for r in rows if r["effective_rate"] is not None]
    return Cell(setting, attacker, by_run, shares, two_stage_interval(_by_seed(psnr), np.median),
                float(np.mean(rates)) if rates else None)


def worst_case(setting: DefenseSetting, cells: list[Cell], thresholds) -> Cell | None:
    """Run by run, the attacker with the highest PSNR (ties: the first by name), over the runs every
    attacker has; ``None`` in place of a cell (an attacker with no runs yet) leaves no run."""
    if not cells or any(c is None for c in cells):
        return None
    shared = set.intersection(*(set(c.by_run) for c in cells))
    if not shared:
        return None
    ordered = sorted(cells, key=lambda c: c.attacker)
    rows = [max((c.by_run[k] for c in ordered), key=raw_psnr) for k in sorted(shared)]
    return make_cell(setting, WORST, rows, thresholds)


@dataclass
class Comparison:
    """Baseline B against Soteria on the runs both have, worst case unless said otherwise."""

    baseline: DefenseSetting
    soteria: DefenseSetting
    eligible: bool  # B's accuracy is non-inferior to Soteria's (the rule that chose it)
    rebuilt: Inference  # share rebuilt, B minus Soteria, two-stage
    paired: Inference  # Newcombe interval and McNemar p of the same difference
    psnr: Inference  # Hodges-Lehmann PSNR difference, B minus Soteria (dB), two-stage
    wilcoxon: float | None
    adjusted_p: float | None = None

    def verdict(self) -> str:
        side = self.rebuilt.side()
        return {"above": "Soteria leaks less", "below": "Soteria leaks more"}.get(side, "no difference resolved")

    def record(self) -> dict:
        return {"baseline": self.baseline.label(), "soteria": self.soteria.label(), "eligible": self.eligible,
                "rebuilt_difference": vars(self.rebuilt), "newcombe": vars(self.paired), "hodges_lehmann_db":
                vars(self.psnr), "wilcoxon_p": self.wilcoxon, "holm_p": self.adjusted_p, "verdict": self.verdict()}


def compare(baseline: Cell, soteria: Cell, threshold: float, eligible: bool, level: float) -> Comparison | None:
    keys = sorted(set(baseline.by_run) & set(soteria.by_run))
    if not keys:
        return None
    b = {k: baseline.psnr_of(k) for k in keys}
    s = {k: soteria.psnr_of(k) for k in keys}
    hit_b = {k: rebuilt(baseline.by_run[k], threshold) for k in keys}
    hit_s = {k: rebuilt(soteria.by_run[k], threshold) for k in keys}
    shares = two_stage_interval(_by_seed({k: float(hit_b[k]) - float(hit_s[k]) for k in keys}), np.mean, level)
    paired = newcombe_interval([hit_b[k] for k in keys], [hit_s[k] for k in keys], level)
    differences = {k: b[k] - s[k] for k in keys}
    return Comparison(baseline.setting, soteria.setting, eligible, envelope(shares, paired.low, paired.high, paired.p),
                      paired,
                      two_stage_interval(_by_seed(differences), hodges_lehmann, level),
                      wilcoxon_p(list(differences.values())))


@dataclass
class Experiment:
    params: dict
    settings: list[DefenseSetting]
    cells: dict  # (setting, attacker) -> Cell
    comparisons: list[Comparison]
    cpu_seconds: float

    def cell(self, setting: DefenseSetting | None, attacker: str = WORST) -> Cell | None:
        return self.cells.get((setting, attacker)) if setting is not None else None

    def title(self) -> str:
        return protocol(self.params)


def choose_baseline(plan: Plan, defense: str, dataset: str, settings: list[DefenseSetting],
                    accuracies: dict) -> tuple[DefenseSetting | None, bool]:
    """The primary rule: the strongest setting of ``defense`` whose mean accuracy is at least the
    headline Soteria setting's minus the margin; else the most accurate one, flagged (``False``)."""
    reference = accuracies.get((dataset, plan.soteria))
    candidates = [s for s in settings if s.defense == defense and (dataset, s) in accuracies]
    if reference is None or not candidates:
        return None, False
    margin = plan.margins.get(dataset, 0.0)
    eligible = [s for s in candidates if accuracies[(dataset, s)].mean.value >= reference.mean.value - margin]
    if eligible:
        return max(eligible, key=lambda s: s.value), True
    return max(candidates, key=lambda s: accuracies[(dataset, s)].mean.value), False


def attackers_faced(cells: dict) -> dict:
    faced: dict[DefenseSetting, set] = {}
    for setting, attacker in cells:
        faced.setdefault(setting, set()).add(attacker)
    return faced


@dataclass(frozen=True)
class Design:
    """What the grid asks for, so that a sweep still running is read as unfinished: the attackers
    each setting faces (a worst case waits for all of them), the training seeds of each FedAvg cell
    (a baseline is chosen only once every setting of it, and Soteria, is trained) and the primary
    experiments (the family's size is the planned one, a missing comparison counting as p = 1)."""

    attackers: dict  # (experiment key, setting) -> attacker names
    trained: dict  # (dataset, setting) -> training seeds asked
    primary: tuple  # the primary experiments' keys, in grid order

    @classmethod
    def of(cls, grid, plan: Plan) -> "Design":
        attackers: dict = {}
        primary: dict = {}
        for spec in grid.reconstructions:
            params = spec.params()
            key = tuple(params[c] for c in EXPERIMENT)
            attackers.setdefault((key, spec.setting), set()).add(spec.attacker)
            if plan.is_primary(params):
                primary.setdefault(key, None)
        trained: dict = {}
        for cell in grid.fedavg:
            trained[(cell.dataset, cell.setting)] = trained.get((cell.dataset, cell.setting), 0) + 1
        return cls({k: frozenset(v) for k, v in attackers.items()}, trained, tuple(primary))

    def trained_enough(self, accuracies: dict, dataset: str, defenses: tuple[str, ...]) -> bool:
        return all(len(accuracies[(d, s)].seeds) >= n if (d, s) in accuracies else False
                   for (d, s), n in self.trained.items() if d == dataset and s.defense in defenses)


def build(rows: list[dict], accuracies: dict, plan: Plan, design: Design | None = None) -> list[Experiment]:
    """The experiments of the results rows, their cells and worst cases, and the comparisons of the
    primary protocol (the primary family's adjusted p-values and intervals included). With the
    grid's ``design``, what it asks for and has not run yet is left out instead of guessed at."""
    grouped: dict[tuple, dict[tuple, list[dict]]] = {}
    for row in rows:
        key = tuple(row[c] for c in EXPERIMENT)
        setting = DefenseSetting.from_json(row["defense"], row["defense_settings"])
        grouped.setdefault(key, {}).setdefault((setting, row["attacker"]), []).append(row)
    primary = list(design.primary) if design else [k for k in grouped if plan.is_primary(dict(zip(EXPERIMENT, k)))]
    family_size = max(1, len(primary) * len(plan.baselines))
    experiments = []
    for key, by_cell in grouped.items():
        params = dict(zip(EXPERIMENT, key))
        settings = sorted({s for s, _ in by_cell}, key=DefenseSetting.sort_key)
        cells = {(s, a): make_cell(s, a, r, plan.thresholds) for (s, a), r in by_cell.items()}
        for setting, names in attackers_faced(cells).items():
            asked = sorted(design.attackers.get((key, setting), names) if design else names)
            planned = [a for a in asked if plan.attackers is None or a in plan.attackers]
            for label, which in ((WORST, planned), (POST_HOC, asked if planned != asked else [])):
                worst = worst_case(setting, [cells.get((setting, a)) for a in which], plan.thresholds)
                if worst is not None:
                    cells[(setting, label)] = worst
        level = 1 - ALPHA / family_size if key in primary else 1 - ALPHA
        comparisons = []
        for defense in plan.baselines:
            if design and not design.trained_enough(accuracies, params["dataset"], (defense, plan.soteria.defense)):
                continue  # pending: the rule must see every setting's accuracy
            baseline, eligible = choose_baseline(plan, defense, params["dataset"], settings, accuracies)
            sot, base = cells.get((plan.soteria, WORST)), cells.get((baseline, WORST))
            found = base and sot and compare(base, sot, plan.primary_threshold, eligible, level)
            if found:
                comparisons.append(found)
        cpu = sum(r["cpu_seconds"] for rs in by_cell.values() for r in rs)
        experiments.append(Experiment(params, settings, cells, comparisons, cpu))
    family = [c for e in experiments if tuple(e.params[k] for k in EXPERIMENT) in primary for c in e.comparisons]
    planned = [c.rebuilt.p for c in family] + ([1.0] * (family_size - len(family)) if design else [])
    for comparison, p in zip(family, holm(planned)):
        comparison.adjusted_p = p
    experiments.sort(key=lambda e: (e.params["model_state"] != plan.model_state, e.params["local_steps"],
                                    e.params["attack"], e.params["dataset"] != "mnist", e.params["model_state"]))
    return experiments


def frontiers(experiment: Experiment, accuracies: dict, threshold: float) -> dict[str, list[DefenseSetting]]:
    """Per defense, its settings on the leakage-accuracy frontier (worst case, share rebuilt)."""
    found: dict[str, list] = {}
    for setting in experiment.settings:
        cell, accuracy = experiment.cell(setting), accuracies.get((experiment.params["dataset"], setting))
        if cell is not None and accuracy is not None:
            found.setdefault(setting.defense, []).append((setting, accuracy.mean.value, cell.rebuilt[threshold].value))
    return {defense: frontier(points) for defense, points in found.items()}
