"""The verdict summary as Markdown and its figure (``results/verdict_summary.md``, read by chapter 5):
the findings in sentences (:mod:`.findings`), the primary family in one short table, then the accuracies with the non-inferiority rule,
the frontier, every experiment's cells and the exploratory comparisons, and the cost."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from .inference import Inference, non_inferior
from .report import dataset_name, fmt, fraction_text, percent_interval, points_text, table
from .verdict import POST_HOC, WORST, Experiment, Plan, frontiers, name


def decibels(estimate: Inference | None) -> str:
    if estimate is None:
        return "–"
    if estimate.low is None:
        return f"{estimate.value:+.1f} dB"
    return f"{estimate.value:+.1f} [{estimate.low:+.1f}, {estimate.high:+.1f}] dB"


def primary_table(experiments: list[Experiment], plan: Plan) -> list[str]:
    """The primary family: one row per attack, dataset and baseline defense."""
    rows = []
    for e in experiments:
        if not plan.is_primary(e.params):
            continue
        for c in e.comparisons:
            flag = "" if c.eligible else " (no setting as accurate)"
            rows.append([f"{e.params['attack'].upper()}, {dataset_name(e.params['dataset'])}",
                         name(c.baseline) + flag, fraction_text(e.cell(c.baseline).rebuilt[plan.primary_threshold]),
                         fraction_text(e.cell(c.soteria).rebuilt[plan.primary_threshold]), points_text(c.rebuilt),
                         fmt(c.adjusted_p, 2), c.verdict()])
    return table(["attack, data", "baseline", f"rebuilt ≥ {plan.primary_threshold:g} dB", "Soteria",
                  "difference", "Holm p", "verdict"], rows)


def accuracy_table(accuracies: dict, plan: Plan) -> list[str]:
    rows = []
    for (dataset, setting), a in sorted(accuracies.items(), key=lambda i: (i[0][0], i[0][1].sort_key())):
        reference = accuracies.get((dataset, plan.soteria))
        free = ""
        if reference is not None and setting != plan.soteria:
            ok, lower = non_inferior(a.values, reference.values, plan.margins.get(dataset, 0.0))
            free = f"{'yes' if ok else 'no'} ({100 * lower:+.1f})"
        rows.append([dataset_name(dataset), name(setting), percent_interval(a.mean), str(len(a.values)),
                     "–" if a.rounds is None else str(a.rounds),
                     "–" if a.late_gain is None else f"{100 * a.late_gain:+.2f}", free,
                     "" if a.epsilon is None else ("∞" if a.epsilon == float("inf") else f"{a.epsilon:.3g}")])
    return table(["data", "setting", "accuracy, mean [95 % CI]", "seeds", "rounds",
                  "still gained a round (points, last quarter)", "non-inferior to Soteria (lower bound, points)",
                  "epsilon"], rows)


def cells_table(experiment: Experiment, plan: Plan) -> list[str]:
    attackers = sorted({a for _, a in experiment.cells}, key=lambda a: (a in (WORST, POST_HOC), a == POST_HOC, a))
    rows = []
    for setting in experiment.settings:
        row = [name(setting)]
        for attacker in attackers:
            cell = experiment.cell(setting, attacker)
            row.append("" if cell is None else fraction_text(cell.rebuilt[plan.primary_threshold]))
        worst = experiment.cell(setting)
        row.append("–" if worst is None else f"{worst.psnr.value:.1f}")
        rate = next((c.effective_rate for (s, _), c in experiment.cells.items()
                     if s == setting and c.effective_rate is not None), None)
        row.append("–" if rate is None else f"{100 * rate:.0f} %")
        rows.append(row)
    return table(["setting", *attackers, "median PSNR, worst (dB)", "effective rate"], rows)


def exploratory_table(experiment: Experiment) -> list[str]:
    return table(["baseline", "Hodges-Lehmann PSNR, baseline − Soteria", "Wilcoxon p", "Newcombe (McNemar p)"],
                 [[name(c.baseline), decibels(c.psnr), fmt(c.wilcoxon, 2),
                   f"{points_text(c.paired)} ({fmt(c.paired.p, 2)})"] for c in experiment.comparisons])


TABLES = "<!-- the tables -->"  # where the findings end: the results appendix includes from here


def render(experiments: list[Experiment], accuracies: dict, plan: Plan, sources: str, figure: str | None,
           findings: list[str] = (), state: str | None = None) -> str:
    """The summary; ``state`` (how much of the grid the results hold) opens the tables, so that the
    results appendix, which includes only the tables, says it too."""
    lines = ["# Verdict summary", "", sources, ""]
    if findings:
        lines += ["## Findings", "", *findings]
    lines += [TABLES, "", *([state, ""] if state else []),
             f"## Primary comparisons (fixed before the runs; {', '.join(a.upper() for a in plan.attacks or ())}"
             f"{', ' if plan.attacks else ''}{plan.model_state}, {plan.local_steps} local step)", "",
             f"Share of runs rebuilt (PSNR ≥ {plan.primary_threshold:g} dB, worst case over the attackers that know the "
             "defense), baseline minus Soteria: above 0, Soteria leaks less. Intervals: two-stage bootstrap (model "
             "seeds, then images) at the family's Bonferroni level; p-values Holm-adjusted over the family.", "",
             *primary_table(experiments, plan), "", "## Utility on the attacked model and protocol", "",
             *accuracy_table(accuracies, plan), ""]
    if figure:
        lines += [f"![leakage against accuracy]({figure})", ""]
    lines += ["## Every experiment (exploratory beyond the primary family)", ""]
    for e in experiments:
        lines += [f"### {e.title()}", "", *cells_table(e, plan), ""]
        if e.comparisons:
            lines += [*exploratory_table(e), ""]
        lines += [f"Cost: {e.cpu_seconds / 3600:.2f} CPU-hours.", ""]
    return "\n".join(lines) + "\n"


def frontier_figure(experiments: list[Experiment], accuracies: dict, plan: Plan) -> Figure:
    """Share of runs rebuilt (worst case) against FedAvg accuracy, one panel per primary experiment (in a column),
    each defense's settings joined, its frontier drawn solid; intervals both ways."""
    primary = [e for e in experiments if plan.is_primary(e.params)]
    panels = max(1, len(primary))  # one above the other: the page's column is narrow on a phone
    figure = Figure(figsize=(4.0, 3.2 * panels + 0.8), layout="constrained")  # as wide as figure 5.4
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    for ax, e in zip(axes, primary):
        kept = frontiers(e, accuracies, plan.primary_threshold)
        for defense, on_frontier in kept.items():
            settings = [s for s in e.settings if s.defense == defense and (e.params["dataset"], s) in accuracies
                        and e.cell(s) is not None]
            info = settings[0].info if settings else None
            if info is None:
                continue
            colour, marker = info.style
            xs = [100 * accuracies[(e.params["dataset"], s)].mean.value for s in settings]
            ys = [100 * e.cell(s).rebuilt[plan.primary_threshold].value for s in settings]
            on_top = 3 if defense == plan.soteria.defense else 2  # Soteria's point is never hidden
            ax.plot(xs, ys, color=colour, marker=marker, linestyle=":", label=info.title, zorder=on_top,
                    markersize=9 if on_top == 3 else 6, markerfacecolor="none" if on_top == 3 else colour)
            front = [(100 * accuracies[(e.params["dataset"], s)].mean.value,
                      100 * e.cell(s).rebuilt[plan.primary_threshold].value) for s in on_frontier]
            ax.plot([x for x, _ in front], [y for _, y in front], color=colour, linewidth=2)
            for s, x, y in zip(settings, xs, ys):
                r = e.cell(s).rebuilt[plan.primary_threshold]
                a = accuracies[(e.params["dataset"], s)].mean
                if r.low is not None:
                    ax.vlines(x, 100 * r.low, 100 * r.high, color=colour, alpha=0.4)
                if a.low is not None:
                    ax.hlines(y, 100 * a.low, 100 * a.high, color=colour, alpha=0.4)
        ax.set_title(f"{e.params['attack'].upper()}, {dataset_name(e.params['dataset'])}", fontsize=10)
        ax.set_ylim(-5, 105)
        ax.set_xlabel("FedAvg test accuracy (%)")
        ax.set_ylabel(f"runs rebuilt ≥ {plan.primary_threshold:g} dB (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(2, len(labels)), fontsize=8)
    return figure


def figure_writer(experiments: list[Experiment], accuracies: dict, plan: Plan, output: Path):
    """The frontier figure's path beside the summary (``<stem>_frontier.png``) and its writer for
    :func:`soteria_lib.files.write_together`."""
    figure = frontier_figure(experiments, accuracies, plan)
    return (output.with_name(output.stem + "_frontier.png"),
            lambda tmp: figure.savefig(tmp, format="png", dpi=110))
