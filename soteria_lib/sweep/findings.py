"""The verdict's findings as sentences (chapter 5, "The verdict"): each stated once, generated from
the results, so that the words change when the numbers do and the book never repeats a number it
did not compute. The introduction and chapter 8 link to them instead of restating them.

One finding per threat model, in the order chapter 5 reads them:

* the attacker of the paper's evaluation (plain DLG) against Soteria, on the initial model;
* the attackers that know Soteria (:mod:`soteria_lib.attacks.battery`), worst case run by run;
* the primary family: Soteria against each baseline at the setting its accuracy chose
  (:mod:`.verdict`), Holm-adjusted;
* the noise baselines against the attackers that know them, and what their failures mean;
* the accuracy each costs (FedAvg on the attacked model; the non-inferiority test);
* the exploratory protocols: trained global models, several local steps, the GS arm.

While the grid is not complete every finding is marked provisional, with how much of the grid it
reads (:class:`Progress`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..attacks.battery import ATTACKERS
from ..defenses import DefenseSetting, defense_info
from .grid import Grid
from .inference import ALPHA, non_inferior
from .report import dataset_name, fraction_text, percent_interval, points_text
from .results import RESULTS
from .verdict import EXPERIMENT, POST_HOC, WORST, Cell, Design, Experiment, Plan, compare, name, protocol

NONE = DefenseSetting("none", 0.0)
_FIXED = " fixed before the runs"  # said of the attackers where the plan fixes them
NOISE = ("dp-gaussian", "dp-sgd")


@dataclass(frozen=True)
class Progress:
    """How much of the grid the results hold."""

    runs: int
    runs_asked: int
    fedavg: int
    fedavg_asked: int

    @property
    def complete(self) -> bool:
        return self.runs >= self.runs_asked and self.fedavg >= self.fedavg_asked

    def text(self) -> str:
        state = "complete" if self.complete else "not complete: every finding and table read from them is provisional"
        return (f"The results hold {self.runs:,} of the grid's {self.runs_asked:,} reconstructions and "
                f"{self.fedavg} of its {self.fedavg_asked} FedAvg runs ({state}).")


def progress(grid: Grid, rows: list[dict], accuracies: dict) -> Progress:
    """The grid's reconstructions found in ``rows`` (by run key) and its FedAvg cells in ``accuracies``
    (by dataset, setting and seed, trained for the grid's number of rounds)."""
    done = {RESULTS.run_key(row) for row in rows}
    runs = sum(RESULTS.run_key(spec.params()) in done for spec in grid.reconstructions)
    trained = {(a.dataset, a.setting, seed, a.rounds) for a in accuracies.values() for seed in a.seeds}
    fedavg = sum((f.dataset, f.setting, f.seed, f.experiment().training.rounds) in trained for f in grid.fedavg)
    return Progress(runs, len(grid.reconstructions), fedavg, len(grid.fedavg))


@dataclass(frozen=True)
class Finding:
    key: str
    title: str
    lead: str  # what is measured, ending in a colon
    items: tuple[str, ...]  # one per dataset or comparison; empty: nothing has run yet
    coda: str = ""  # how to read it


def _where(e: Experiment) -> str:
    return dataset_name(e.params["dataset"])


def _primary(experiments: list[Experiment], plan: Plan) -> list[Experiment]:
    return [e for e in experiments if plan.is_primary(e.params)]


def _share(cell: Cell | None, threshold: float) -> str:
    return "no runs yet" if cell is None else fraction_text(cell.rebuilt[threshold])


def _each_knowing(e: Experiment, setting: DefenseSetting, t: float) -> str:
    """Each attacker that knows the defense, with its own count: ``mask-aware 6/6, ...``."""
    names = sorted(a for s, a in e.cells if s == setting and a not in (WORST, POST_HOC, "plain"))
    counts = [f"{a} {round(c.rebuilt[t].value * c.rebuilt[t].n)}/{c.rebuilt[t].n}"
              for a in names for c in [e.cell(setting, a)]]
    return ", ".join(counts) or "none has run yet"


def _attackers(defenses: tuple[str, ...], plan: Plan) -> str:
    """The plan's attackers that face these defenses, in the battery's order: ``the plain, ... and noise-aware``."""
    names = [a.name for a in ATTACKERS.values() if any(a.applies(defense_info(d)) for d in defenses)
             and (plan.attackers is None or a.name in plan.attackers)]
    return "the " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])


def _difference(first: Cell | None, second: Cell | None, threshold: float) -> str:
    """First minus second in runs rebuilt, paired, two-stage 95 % interval, with its reading."""
    found = first and second and compare(first, second, threshold, True, 1 - ALPHA)
    if not found:
        return "no paired runs yet"
    side = found.rebuilt.side()
    reading = {"above": "resolved", "below": "resolved, the other way"}.get(side, "not resolved")
    return f"{points_text(found.rebuilt)} on {found.rebuilt.n} paired runs, {reading}"


def paper_attacker(experiments: list[Experiment], plan: Plan) -> Finding:
    t = plan.primary_threshold
    parts = [f"{_where(e)}: {_share(e.cell(NONE, 'plain'), t)} with no defense, "
             f"{_share(e.cell(plan.soteria, 'plain'), t)} against {name(plan.soteria)}" for e in _primary(experiments, plan)]
    return Finding("paper-attacker", "The attacker of the paper's evaluation",
                   f"Plain DLG, which does not know the defense, on the initial model; runs rebuilt at {t:g} dB or "
                   "more:", tuple(parts))


def knowing_attacker(experiments: list[Experiment], plan: Plan) -> Finding:
    t = plan.primary_threshold
    parts = []
    for e in _primary(experiments, plan):
        worst, undefended = e.cell(plan.soteria), e.cell(NONE, "plain")
        parts.append(f"{_where(e)}: {_share(worst, t)} against {name(plan.soteria)} (each attacker that knows it: "
                     f"{_each_knowing(e, plan.soteria, t)}), {_share(undefended, t)} for the plain attacker with no "
                     f"defense; no defense minus Soteria {_difference(undefended, worst, t)}")
    return Finding("knowing-attacker", "The attackers that know Soteria",
                   f"The best of {_attackers((plan.soteria.defense,), plan)} attackers, run by run (the worst case), "
                   f"on the initial model; runs rebuilt at {t:g} dB or more:", tuple(parts))


def primary(experiments: list[Experiment], plan: Plan, design: Design | None = None) -> Finding:
    t = plan.primary_threshold
    parts = []
    ran = {tuple(e.params[c] for c in EXPERIMENT) for e in experiments}
    for key in (design.primary if design else ()):
        if key not in ran:
            parts.append(f"{protocol(dict(zip(EXPERIMENT, key)))}: pending (no runs yet)")
    for e in _primary(experiments, plan):
        compared = {c.baseline.defense: c for c in e.comparisons}
        for defense in plan.baselines:
            c = compared.get(defense)
            if c is None:
                parts.append(f"{_where(e)}, {defense_info(defense).title}: pending (the runs or the FedAvg "
                             "accuracies that choose its setting are not all in)")
                continue
            p = "–" if c.adjusted_p is None else f"{c.adjusted_p:.2g}"
            reading = (f"**{c.verdict()}**" if c.eligible else
                       "not a comparison at matched accuracy: no setting of this baseline is within the margin, so "
                       "the rule took its most accurate one, which is less accurate than Soteria")
            parts.append(f"{_where(e)}, {name(c.baseline)}: {_share(e.cell(c.baseline), t)} against Soteria's "
                         f"{_share(e.cell(c.soteria), t)}; difference {points_text(c.rebuilt)} on {c.rebuilt.n} "
                         f"paired runs, Holm p = {p}: {reading}")
    return Finding("primary", "Soteria against the baselines at matched accuracy (the primary family)",
                   f"Runs rebuilt at {t:g} dB, worst case over the attackers{_FIXED * bool(plan.attackers)} that "
                   "know each defense, the baseline minus Soteria (above 0, Soteria leaks less); each baseline at its "
                   f"strongest setting whose mean accuracy is within the margin of {name(plan.soteria)}'s:", tuple(parts),
                   "A baseline that no attacker rebuilds leaks less here only as far as its attackers are strong "
                   "(the next finding).")


def noise(experiments: list[Experiment], plan: Plan) -> Finding:
    t = plan.primary_threshold
    parts, failed = [], []
    for e in _primary(experiments, plan):
        for setting in e.settings:
            worst = e.cell(setting)
            if setting.defense in NOISE and worst is not None:
                added = e.cell(setting, POST_HOC)
                names = sorted(a for s, a in e.cells if s == setting and plan.attackers is not None
                               and a not in (*plan.attackers, WORST, POST_HOC))
                later = ("" if added is None else f"; counting the {', '.join(names)} attacker{'s' * (len(names) > 1)} "
                         f"added during the sweep too, the sensitivity analysis: {_share(added, t)}")
                parts.append(f"{_where(e)}, {name(setting)}: {_share(worst, t)} (each attacker that knows it: "
                             f"{_each_knowing(e, setting, t)}){later}")
                if worst.rebuilt[t].value == 0:
                    failed.append(f"{_where(e)}, {name(setting)}")
    coda = ("" if not failed else
            f"Where every attacker{_FIXED * bool(plan.attackers)} fails ({'; '.join(failed)}), the failure is "
            "evidence of privacy only as far as these attackers are strong, and none of them is known to be the "
            "strongest against noise. Chapter 5's section \"Why the attackers fail against noise\" measures what "
            "the update still carries at each setting and whether searches started at the private image stay there, "
            "and the sweep adds an attacker with a prior on natural images "
            "(the sensitivity analysis beside each setting, once its runs are in): a failure is evidence only where "
            "such stronger attackers fail too.")
    return Finding("noise", "The noise baselines against the attackers that know them",
                   f"The best of {_attackers(NOISE, plan)} attackers, run by run, on the initial model; runs rebuilt at "
                   f"{t:g} dB or more:", tuple(parts), coda)


def accuracy(accuracies: dict, plan: Plan, design: Design | None = None) -> Finding:
    parts = []
    for dataset in sorted({d for d, _ in accuracies}, key=lambda d: d != "mnist"):
        sot, none = accuracies.get((dataset, plan.soteria)), accuracies.get((dataset, NONE))
        if sot is None or none is None:
            missing = " and ".join(name(s) for s, a in ((plan.soteria, sot), (NONE, none)) if a is None)
            parts.append(f"{dataset_name(dataset)}: {missing} not trained yet")
            continue
        asked = design.trained.get((dataset, plan.soteria), 0) if design else 0
        if len(sot.seeds) < asked:
            parts.append(f"{dataset_name(dataset)}: {name(plan.soteria)} {percent_interval(sot.mean)} after "
                         f"{len(sot.seeds)} of {asked} training seeds, against {percent_interval(none.mean)} with no "
                         "defense; the non-inferiority test waits for every seed")
            continue
        margin = plan.margins.get(dataset, 0.0)
        ok, lower = non_inferior(sot.values, none.values, margin)
        text = (f"{dataset_name(dataset)}: {name(plan.soteria)} {percent_interval(sot.mean)} against "
                f"{percent_interval(none.mean)} with no defense after {sot.rounds} rounds; non-inferior at a "
                f"{100 * margin:g}-point margin: {'yes' if ok else 'not shown'} (lower bound {100 * lower:+.1f} points)")
        if sot.late_gain is not None and none.late_gain is not None:
            text += (f"; gained a round over the last quarter of rounds: {100 * sot.late_gain:+.2f} and "
                     f"{100 * none.late_gain:+.2f} points (about 0 once training has levelled off)")
        parts.append(text)
    return Finding("accuracy", "What Soteria costs in accuracy",
                   "FedAvg test accuracy on the attacked model and protocol, mean over training seeds with its 95 % "
                   "interval:", tuple(parts), "Only a non-inferiority test that passes supports \"at no cost in "
                   "accuracy\".")


def exploratory(experiments: list[Experiment], plan: Plan, design: Design | None = None) -> Finding:
    t = plan.primary_threshold
    parts = [f"{protocol(e.params)}: {_share(e.cell(NONE, 'plain'), t)} with no defense (plain attacker), "
             f"{_share(e.cell(plan.soteria, 'plain'), t)} against {name(plan.soteria)} (plain) and "
             f"{_share(e.cell(plan.soteria), t)} (worst case)" for e in experiments if not plan.is_primary(e.params)]
    ran = {tuple(e.params[c] for c in EXPERIMENT) for e in experiments}
    waiting = {}
    for key, _ in (design.attackers if design else ()):
        params = dict(zip(EXPERIMENT, key))
        if key not in ran and not plan.is_primary(params):
            waiting.setdefault(key, protocol(params))
    parts += [f"{title}: not run yet" for title in waiting.values()]
    return Finding("exploratory", "Other training states, local steps and attacks (exploratory)",
                   f"Runs rebuilt at {t:g} dB or more, one model seed each:", tuple(parts),
                   "The 5-step cells attack the mean of five gradients with a one-gradient objective, so they bound "
                   "what such an update leaks from below.")


def findings(experiments: list[Experiment], accuracies: dict, plan: Plan, design: Design | None = None) -> list[Finding]:
    """Every finding; with the grid's ``design`` (the one :func:`.verdict.build` read), what it asks for
    and has not run or trained yet is named."""
    return [paper_attacker(experiments, plan), knowing_attacker(experiments, plan),
            primary(experiments, plan, design), noise(experiments, plan), accuracy(accuracies, plan, design),
            exploratory(experiments, plan, design)]


def render(found: list[Finding], state: Progress | None = None) -> list[str]:
    """The findings as Markdown: each its title in bold and what it measures, a bullet per dataset or
    comparison, and how to read it."""
    lines = [] if state is None else [state.text(), ""]
    for f in found:
        lines += [f"**{f.title}.** {f.lead}", ""]
        lines += [f"* {item}" for item in f.items] or ["* no runs yet"]
        lines += ["", *([f.coda, ""] if f.coda else [])]
    return lines
