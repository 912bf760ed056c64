"""The summary as Markdown (``results/<name>_summary.md``, read by chapter 5): the verdict (median
MSEs, then runs rebuilt), the accuracies it rests on, one table per experiment with every attacker
of the battery, the paper's figure beside ours, what is still missing, and the cost."""
from __future__ import annotations

import math

from ..data import DATASETS
from ..metrics import DIVERGED_MSE
from .statistics import INTERVAL_RULE, MATCHING_RULE, Estimate
from .summary import CAPPED_RULE, CONVENTIONS, PUBLISHED_GS_CIFAR10, REBUILT_RULE, VIEWS, WORST, Group


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def interval(estimate: Estimate | None, digits: int = 3) -> str:
    """``value [low, high]``; the value alone where there is no interval."""
    if estimate is None:
        return "–"
    if estimate.low is None:
        return fmt(estimate.value, digits)
    return f"{fmt(estimate.value, digits)} [{fmt(estimate.low, digits)}, {fmt(estimate.high, digits)}]"


def percent_interval(estimate: Estimate | None) -> str:
    if estimate is None:
        return "–"
    scaled = Estimate(100 * estimate.value, None if estimate.low is None else 100 * estimate.low,
                      None if estimate.high is None else 100 * estimate.high, estimate.n)
    return interval(scaled, 3) + " %"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def dataset_name(name: str) -> str:
    return DATASETS[name].title if name in DATASETS else name


def accuracy_note(group: Group) -> str:
    source = group.accuracy_dataset
    if source is None:
        return "No FedAvg cells: no accuracies, no matched ratios."
    if source != group.params["dataset"]:
        return (f"Accuracies from the {dataset_name(source)} FedAvg cells: this dataset has none, so the "
                "matching assumes the same accuracy ordering of the defense settings.")
    return f"Accuracies from the {dataset_name(source)} FedAvg cells."


def verdict(groups: list[Group]) -> list[str]:
    """One row per experiment and baseline: the matched Soteria setting and the ratio of median
    MSEs (Soteria over baseline; above 1, Soteria leaks less) for the plain attacker and the worst case."""
    rows = []
    for g in groups:
        for c in g.comparisons:
            cells = [f"{c.baseline.label()} ({percent_interval(c.baseline_accuracy)})",
                     "none matches" if c.soteria is None else
                     f"{c.soteria.label()} ({percent_interval(c.soteria_accuracy)})"]
            for view in VIEWS:
                ratio = c.ratios.get(view)
                cells += [interval(ratio) if view in c.ratios else "not run", c.verdict(view) if view in c.ratios else ""]
            rows.append([g.params["attack"].upper(), dataset_name(g.params["dataset"]), *cells])
    return table(["attack", "dataset", "baseline (accuracy)", "matched Soteria (accuracy)",
                  "MSE ratio, plain attacker", "plain: verdict", "MSE ratio, worst case", "worst case: verdict"], rows)


def fraction_text(estimate: Estimate | None) -> str:
    """A fraction of runs in percent with its interval and the count: ``41 [22, 63] % (7/17)``."""
    if estimate is None:
        return "–"
    count = f" ({round(estimate.value * estimate.n)}/{estimate.n})"
    if estimate.low is None:
        return f"{100 * estimate.value:.0f} %" + count
    return f"{100 * estimate.value:.0f} [{100 * estimate.low:.0f}, {100 * estimate.high:.0f}] %" + count


def points_text(estimate: Estimate | None) -> str:
    """A difference of fractions in percentage points, with its interval."""
    if estimate is None:
        return "–"
    if estimate.low is None:
        return f"{100 * estimate.value:+.0f} points"
    return f"{100 * estimate.value:+.0f} [{100 * estimate.low:+.0f}, {100 * estimate.high:+.0f}] points"


def rebuilt_verdict(groups: list[Group]) -> list[str]:
    """One row per experiment and baseline: the fraction of runs rebuilt against the matched Soteria
    setting and against the baseline, and their difference, per view."""
    rows = []
    for g in groups:
        for c in g.comparisons:
            cells = [c.baseline.label(), "none matches" if c.soteria is None else c.soteria.label()]
            for view in VIEWS:
                if view not in c.rebuilt:
                    cells += ["not run", "", ""]
                    continue
                soteria = None if c.soteria is None else g.cell(c.soteria, view)
                cells += [f"{fraction_text(getattr(soteria, 'rebuilt', None))} vs "
                          f"{fraction_text(g.cell(c.baseline, view).rebuilt)}",
                          points_text(c.rebuilt[view]), c.verdict(view, "rebuilt")]
            rows.append([g.params["attack"].upper(), dataset_name(g.params["dataset"]), *cells])
    return table(["attack", "dataset", "baseline", "matched Soteria", "rebuilt, plain: Soteria vs baseline",
                  "difference", "plain: verdict", "rebuilt, worst case: Soteria vs baseline", "difference",
                  "worst case: verdict"], rows)


def short_verdict(groups: list[Group]) -> list[str]:
    """The verdict in four narrow columns, one row per attack and dataset: how often the image was
    rebuilt with no defense (plain attacker), and against the strongest Soteria setting that matched
    a baseline's accuracy, by the attacker it was evaluated with (plain) and by the worst case of the
    battery (attackers that know the defense). Chapter 5 states it; the full tables say the rest."""
    def share(cell) -> str:
        rebuilt = getattr(cell, "rebuilt", None)
        return "–" if rebuilt is None else f"{100 * rebuilt.value:.0f} % ({round(rebuilt.value * rebuilt.n)}/{rebuilt.n})"
    rows = []
    for g in groups:
        strongest = g.strongest_matched()  # g.cell(None, ...) is None: no Soteria setting matched
        setting = "no Soteria setting matched" if strongest is None else strongest.label().replace("soteria", "Soteria")
        rows.append([f"{g.params['attack'].upper()}, {dataset_name(g.params['dataset'])} ({setting})",
                     share(g.cell(g.undefended())), share(g.cell(strongest)), share(g.cell(strongest, WORST))])
    return table(["attack, dataset (Soteria)", "no defense", "Soteria, plain attacker",
                  "Soteria, attacker that knows it"], rows)


def pruning(info) -> bool:
    """Baselines that prune (they leave exact zeros), by their registrations."""
    return info.leaves_zeros


def noise(info) -> bool:
    """Baselines that add noise, by their registrations."""
    return info.noise


def _largest(comparisons, view: str, family) -> str:
    """The largest ratio (point estimate) of ``view`` over baselines whose registration satisfies
    ``family``, with its interval and baseline."""
    found = [(c.ratios[view], c.baseline) for c in comparisons
             if family(c.baseline.info) and c.ratios.get(view) is not None]
    if not found:
        return "–"
    ratio, baseline = max(found, key=lambda item: item[0].value)
    return f"{interval(ratio)} ({baseline.label()})"


def claim_section(groups: list[Group]) -> list[str]:
    """The paper's claim ("up to 160x the baselines' MSE at no cost in accuracy") measured: per
    attack and dataset, the largest matched ratio over pruning and over noise, for the plain
    attacker and the worst case, and how often the image was rebuilt without a defense and against
    the strongest Soteria setting that matched a baseline."""
    rows = []
    for g in groups:
        strongest = g.strongest_matched()
        undefended = g.cell(g.undefended())
        rebuilt = [fraction_text(getattr(undefended, "rebuilt", None))]
        for view in VIEWS:  # g.cell(None, ...) is None: no Soteria setting matched
            rebuilt.append(fraction_text(getattr(g.cell(strongest, view), "rebuilt", None)))
        rows.append([g.params["attack"].upper(), dataset_name(g.params["dataset"]),
                     _largest(g.comparisons, "plain", pruning), _largest(g.comparisons, WORST, pruning),
                     _largest(g.comparisons, "plain", noise), _largest(g.comparisons, WORST, noise),
                     "–" if strongest is None else strongest.label(), *rebuilt])
    return table(["attack", "dataset", "largest ratio over pruning, plain", "over pruning, worst case",
                  "largest ratio over noise, plain", "over noise, worst case", "strongest matched Soteria",
                  "rebuilt, no defense", "rebuilt against it, plain", "rebuilt against it, worst case"], rows)


def accuracy_section(accuracies: dict) -> list[str]:
    ordered = sorted(accuracies.values(), key=lambda a: (a.dataset, a.setting.sort_key()))
    return table(["dataset", "defense", "test accuracy, mean [95 % CI]", "epsilon (delta 1e-5)", "seeds",
                  "per seed", "diverged", "model", "scale", "test examples", "rounds"],
                 [[dataset_name(a.dataset), a.setting.label(), percent_interval(a.mean), epsilon_text(a.epsilon),
                   str(len(a.seeds)), ", ".join(f"{100 * v:.2f}" for v in a.values), str(a.diverged), str(a.model),
                   str(a.scale), str(a.test_examples), str(a.rounds)] for a in ordered])


def epsilon_text(epsilon: float | None) -> str:
    """A setting's epsilon: a DP-SGD budget, infinite for noise that clips nothing per example."""
    if epsilon is None:
        return ""
    return "∞ (nothing clipped per example)" if math.isinf(epsilon) else f"{epsilon:.3g}"


def _cell_text(group: Group, setting, attacker: str) -> str:
    cell = group.cell(setting, attacker)
    if cell is None:
        return ""
    if cell.expected in (None, cell.runs):
        runs = f"{cell.runs}"
    else:  # runs done of those the grid asks for; rows of a cell the grid no longer has are kept, and said so
        runs = f"{cell.runs}/{cell.expected}" if cell.expected else f"{cell.runs}, not in the grid"
    diverged = f", {cell.diverged} div." if cell.diverged else ""
    return f"{interval(cell.mse)} (n={runs}{diverged})"


def group_section(group: Group, accuracies: dict) -> list[str]:
    lines = [f"### {group.title()}", "", accuracy_note(group), "",
             "Median MSE [95 % CI] (runs; diverged) per attacker:", ""]
    lines += table(["defense", *group.attackers, "median PSNR, plain (dB)", "FedAvg accuracy"],
                   [[s.label(), *[_cell_text(group, s, a) for a in group.attackers],
                     fmt(getattr(group.cell(s), "psnr_median", None)),
                     percent_interval(getattr(group.accuracy(accuracies, s), "mean", None))]
                    for s in group.settings])
    lines += ["", "Runs rebuilt (PSNR at least the threshold), % [95 % CI] (rebuilt/runs) per attacker:", ""]
    lines += table(["defense", *group.attackers],
                   [[s.label(), *[fraction_text(getattr(group.cell(s, a), "rebuilt", None)) if group.cell(s, a)
                                  else "" for a in group.attackers]] for s in group.settings])
    if group.equal_rate:
        lines += ["", "Soteria against pruning at the same rate, plain attacker (the published figure's comparison):", ""]
        lines += table(["rate", "median mse, Soteria", "median mse, pruning", "ratio [95 % CI]"],
                       [[f"{e['rate']:g} %", fmt(e["mse_soteria"]), fmt(e["mse_prune"]),
                         interval(None if e["ratio"] is None else Estimate(**e["ratio"]))] for e in group.equal_rate])
    return lines + [""]


def paper_section(groups: list[Group]) -> list[str]:
    """Our GS CIFAR-10 medians (normalised MSE, plain attacker) beside the published figure's values."""
    lines = ["## Beside the published figure (GS, CIFAR-10, MSE in normalised space)", "",
             "Published: one image (the authors' demo), untrained ConvNet-64, 24,000 iterations; values read off "
             "the figure. Ours: the median over the runs of each GS CIFAR-10 experiment below, plain attacker, "
             "with the worst case beside it.", ""]
    found = False
    for g in groups:
        if g.params["attack"] != "gs" or g.params["dataset"] != "cifar10":
            continue
        found = True
        medians = {(s.defense, s.value, a): c.mse_normalized.value for (s, a), c in g.cells.items()}
        rates = sorted(set(PUBLISHED_GS_CIFAR10["soteria"]) | {v for d, v, _ in medians if d in ("soteria", "prune")})
        lines += [f"{g.title()}; undefended median: {fmt(medians.get(('none', 0.0, 'plain')))} (the figure has none):",
                  ""]
        lines += table(["rate", "Soteria, paper", "Soteria, ours", "Soteria, ours, worst case", "pruning, paper",
                        "pruning, ours", "pruning, ours, worst case"],
                       [[f"{r:g} %", fmt(PUBLISHED_GS_CIFAR10["soteria"].get(r)),
                         fmt(medians.get(("soteria", r, "plain"))), fmt(medians.get(("soteria", r, WORST))),
                         fmt(PUBLISHED_GS_CIFAR10["prune"].get(r)), fmt(medians.get(("prune", r, "plain"))),
                         fmt(medians.get(("prune", r, WORST)))] for r in rates])
        lines.append("")
    return lines if found else []


def missing_section(missing: list[dict] | None) -> list[str]:
    if missing is None:
        return []
    lines = ["## Completeness", ""]
    if not missing:
        return lines + ["Every cell of the grid is complete.", ""]
    lines += [f"{len(missing)} cells of the grid are not complete yet (the sweep resumes where it stopped); "
              "their statistics above are provisional:", ""]
    return lines + table(["attack", "dataset", "setting", "attacker", "runs done", "runs asked"],
                         [[m["attack"].upper(), dataset_name(m["dataset"]), m["setting"], m["attacker"],
                           str(m["runs"]), str(m["expected"])] for m in missing]) + [""]


def cost_section(groups: list[Group], sessions: list[dict]) -> list[str]:
    """Measured wall time of every sweep session, and the runs' CPU time (their cost on free cores)."""
    runs = [sum(c.runs for (_, a), c in g.cells.items() if a != WORST) for g in groups]
    lines = ["## Cost (measured)", ""]
    lines += table(["experiment", "runs", "CPU time", "per run"],
                   [[g.title(), str(n), f"{g.cpu_seconds / 60:.1f} min", f"{g.cpu_seconds / n:.2f} s"]
                    for g, n in zip(groups, runs)])
    total = sum(g.cpu_seconds for g in groups)
    lines += ["", f"All reconstructions: {total / 3600:.2f} CPU-hours, i.e. {total / 7200:.2f} hours of wall time "
              "on 2 cores of their own (2 workers x 1 thread); FedAvg runs come on top (their `metrics.json` "
              "holds their seconds).", ""]
    if sessions:
        lines += table(
            ["started (UTC)", "command", "workers x threads", "runs done", "runs skipped", "FedAvg done",
             "FedAvg skipped", "wall time", "load average (start, end)", "status"],
            [[s["started"], f"`{s['command']}`", f"{s['workers']} x {s['threads_per_worker']}",
              str(s["runs_done"]), str(s["runs_skipped"]), str(s["fedavg_done"]), str(s["fedavg_skipped"]),
              f"{s.get('wall_seconds', 0) / 60:.1f} min",
              f"{_first(s.get('load_average_start'))}, {_first(s.get('load_average_end'))}", s["status"]]
             for s in sessions]) + [""]
    return lines


def _first(load) -> str:
    return "–" if not load else f"{load[0]:g}"


def render(groups: list[Group], accuracies: dict, csv_path, fedavg_root, sessions: list[dict],
           plots: list[str], missing: list[dict] | None = None) -> str:
    runs = sum(c.runs for g in groups for (_, a), c in g.cells.items() if a != WORST)
    lines = ["# Sweep summary", "",
             f"From `{csv_path}` ({runs} reconstruction runs) and "
             + ("no FedAvg cells (the grid trains none: nothing is compared at matched accuracy). "
                if fedavg_root is None else f"the FedAvg cells in `{fedavg_root}`. ") +
             "Written by `python -m soteria_lib.experiments summarize`.", "",
             f"- `mse`: {CONVENTIONS['mse']}.", f"- `mse_normalized`: {CONVENTIONS['mse_normalized']}.",
             f"- Diverged: non-finite MSE, or `mse` > {DIVERGED_MSE:g} (farther from the truth than any two "
             "images in [0, 1] can be). Medians include diverged runs.",
             f"- Attackers: the battery of `soteria_lib.attacks.battery`; the {WORST} takes, run by run, the "
             "lowest MSE any attacker reached against that setting; a setting has one only when it faced every "
             "attacker its defense faces elsewhere in the grid (rates that only the plain attacker ran have none).",
             f"- Matched accuracy: {MATCHING_RULE}", f"- Intervals: {INTERVAL_RULE}", f"- Ratios: {CAPPED_RULE}",
             f"- Runs rebuilt: {REBUILT_RULE}", "",
             "## Verdict: Soteria against each baseline at matched accuracy", "",
             "Ratio of median MSEs, Soteria over the baseline, with its 95 % interval: above 1, Soteria leaks "
             "less. The verdict reads the interval: it says a side only when the whole interval is on it.", ""]
    lines += verdict(groups) + [""]
    lines += ["### Runs rebuilt at matched accuracy", "",
              "The same comparisons, counted: the fraction of runs that rebuilt the image against the matched "
              "Soteria setting and against the baseline, and the difference (baseline minus Soteria, over the "
              "runs both share, in percentage points): above 0, Soteria leaks less.", ""]
    lines += rebuilt_verdict(groups) + [""]
    lines += ["### The paper's claim, measured", "",
              "The paper reports up to 160x the baselines' MSE at no cost in accuracy. Per attack and dataset: "
              "the largest matched ratio of median MSEs (its own interval, and the baseline it is against) over "
              "pruning and over noise, for the plain attacker and the worst case; and how often the image was "
              "rebuilt with no defense and against the strongest Soteria setting that matched a baseline.", ""]
    lines += claim_section(groups) + [""]
    lines += ["## FedAvg accuracy", "",
              "A training that diverged stopped there; its value is the accuracy of the last finite global model.",
              ""] + accuracy_section(accuracies) + [""]
    lines += ["## Per experiment", ""]
    for group in groups:
        lines += group_section(group, accuracies)
    lines += paper_section(groups)
    lines += missing_section(missing)
    lines += cost_section(groups, sessions)
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)
