"""The book's two sweep figures, one panel per experiment: MSE against pruning rate (Soteria and
gradient pruning, median with its 95 % band for the plain attacker, the worst case dashed, the
undefended median dotted), and MSE against FedAvg accuracy (every defense setting that has an
accuracy, with both intervals; a defense's settings joined by strength, the weakest and strongest
labelled). One legend sits below the panels. Chapter 5 shows them;
colours, markers and titles come from the defenses' registrations."""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from ..defenses import DEFENSES
from ..files import Writer
from ..metrics import DIVERGED_MSE
from .summary import WORST, Group


def _finite(values) -> bool:
    return all(v is not None and math.isfinite(v) and v > 0 for v in values)


def _panels(count: int) -> tuple[Figure, list]:
    """One panel per experiment, stacked in one column 4 inches wide (with its legend below, within
    soteria_lib.plotting.PHONE_WIDTH): a phone shows it whole."""
    columns = 1
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(4.0 * columns, 2.9 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).flatten().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _legend_below(fig: Figure, axes: list) -> None:
    """One legend for every panel, below them, where it covers no data (each label once)."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=min(len(entries), 2),
                   fontsize=8, frameon=False)


def _rate_cells(group: Group, defense: str, metric: str, attacker: str = "plain") -> list:
    cells = [group.cell(s, attacker) for s in group.settings if s.defense == defense and s.parameter == "pruning_rate"]
    return [c for c in cells if c is not None and _finite([getattr(c, metric).value])]


def mse_against_rate(groups: list[Group], metric: str = "mse") -> Figure:
    """Median against pruning rate for the plain attacker (band: 95 % interval) and, dashed, the worst case."""
    fig, axes = _panels(len(groups))
    for ax, group in zip(axes, groups):
        ax.set_yscale("log")  # before plotting: a panel of equal values then autoscales without warnings
        for info in sorted(DEFENSES.values(), key=lambda i: i.order):
            colour, marker = info.style
            cells = _rate_cells(group, info.name, metric)
            if not cells:
                continue
            ax.plot([c.setting.value for c in cells], [getattr(c, metric).value for c in cells], marker=marker,
                    color=colour, label=info.title)
            band = [c for c in cells if _finite([getattr(c, metric).low, getattr(c, metric).high])]
            ax.fill_between([c.setting.value for c in band], [getattr(c, metric).low for c in band],
                            [getattr(c, metric).high for c in band], color=colour, alpha=0.15, linewidth=0)
            worst = _rate_cells(group, info.name, metric, WORST)
            if worst:
                ax.plot([c.setting.value for c in worst], [getattr(c, metric).value for c in worst], marker=marker,
                        color=colour, linestyle="--", fillstyle="none", label=f"{info.title}, {WORST}")
        for setting in group.settings:
            cell = group.cell(setting)
            if setting.defense == "none" and cell is not None and _finite([getattr(cell, metric).value]):
                ax.axhline(getattr(cell, metric).value, color="black", linestyle=":", linewidth=1, label="no defense")
        if metric == "mse" and ax.get_ylim()[1] > DIVERGED_MSE:
            ax.axhline(DIVERGED_MSE, color="grey", linestyle="-.", linewidth=1, label="diverged above")
        ax.set_xlabel("pruning rate (%)")
        ax.set_ylabel(f"median {metric}")
        ax.set_title(group.title(short=True), fontsize=10)
    _legend_below(fig, axes)
    return fig


def mse_against_accuracy(groups: list[Group], accuracies: dict, metric: str = "mse") -> Figure:
    """Median MSE (plain attacker) against mean FedAvg accuracy, both with their 95 % intervals."""
    fig, axes = _panels(len(groups))
    for ax, group in zip(axes, groups):
        ax.set_yscale("log")
        shown, path = set(), {}
        for setting in group.settings:
            cell, accuracy = group.cell(setting), group.accuracy(accuracies, setting)
            if cell is None or accuracy is None or not _finite([getattr(cell, metric).value]):
                continue
            value, mean = getattr(cell, metric), accuracy.mean
            colour, marker = setting.info.style
            label = None if setting.defense in shown else setting.info.title
            shown.add(setting.defense)
            xerr = None if mean.low is None else [[100 * (mean.value - mean.low)], [100 * (mean.high - mean.value)]]
            yerr = (None if not _finite([value.low, value.high]) else
                    [[value.value - value.low], [value.high - value.value]])
            ax.errorbar(100 * mean.value, value.value, xerr=xerr, yerr=yerr, color=colour, marker=marker,
                        label=label, capsize=2, linewidth=0.8)
            path.setdefault(setting.defense, []).append((setting.value, 100 * mean.value, value.value, colour))
        for points in path.values():  # a defense's settings joined in order of strength; its two ends labelled
            points.sort()
            ax.plot([p[1] for p in points], [p[2] for p in points], color=points[0][3], linewidth=0.6, alpha=0.5)
            for strength, x, y, _ in {points[0], points[-1]} if len(points) > 1 else []:
                ax.annotate(f"{strength:g}", (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"FedAvg test accuracy (%), {group.accuracy_dataset or 'none'}")
        ax.set_ylabel(f"median {metric}, plain attacker")
        ax.set_title(group.title(short=True), fontsize=10)
    _legend_below(fig, axes)
    return fig


def figure_writers(groups: list[Group], accuracies: dict, summary_path: Path) -> dict[Path, Writer]:
    """Both figures, ``<summary stem>_mse_vs_rate.png`` and ``_mse_vs_accuracy.png`` beside the
    summary, as writers for :func:`soteria_lib.files.write_together` (the summary and its figures
    appear together or not at all)."""
    figures = {"mse_vs_rate": mse_against_rate(groups), "mse_vs_accuracy": mse_against_accuracy(groups, accuracies)}
    return {summary_path.with_name(f"{summary_path.stem}_{name}.png"):
            (lambda tmp, figure=figure: figure.savefig(tmp, format="png", dpi=110)) for name, figure in figures.items()}
