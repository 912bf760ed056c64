"""The book's two sweep figures, one panel per experiment: MSE against pruning rate (Soteria and
gradient pruning, median with interquartile band, the undefended median as a dashed line), and
MSE against FedAvg accuracy (every defense setting that has an accuracy). Chapter 5 shows them;
colours, markers and titles come from the defenses' registrations."""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from ..defenses import DEFENSES
from ..files import write_atomic
from ..metrics import DIVERGED_MSE
from .report import title
from .summary import Group


def _finite(values) -> bool:
    return all(v is not None and math.isfinite(v) and v > 0 for v in values)


def _panels(count: int) -> tuple[Figure, list]:
    columns = min(count, 2)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(4.4 * columns, 3.3 * rows), layout="constrained")  # readable at ~700 px
    axes = fig.subplots(rows, columns, squeeze=False).flatten().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def mse_against_rate(groups: list[Group], metric: str = "mse") -> Figure:
    fig, axes = _panels(len(groups))
    for ax, group in zip(axes, groups):
        ax.set_yscale("log")  # before plotting: a panel of equal values then autoscales without warnings
        for info in sorted(DEFENSES.values(), key=lambda i: i.order):
            cells = [c for c in group.cells if c.setting.defense == info.name and c.setting.parameter == "pruning_rate"
                     and _finite([getattr(c, metric).median])]
            if not cells:
                continue
            colour, marker = info.style
            rates = [c.setting.value for c in cells]
            ax.plot(rates, [getattr(c, metric).median for c in cells], marker=marker, color=colour, label=info.title)
            band = [c for c in cells if _finite([getattr(c, metric).q1, getattr(c, metric).q3])]
            ax.fill_between([c.setting.value for c in band], [getattr(c, metric).q1 for c in band],
                            [getattr(c, metric).q3 for c in band], color=colour, alpha=0.15, linewidth=0)
        for cell in group.cells:
            if cell.setting.defense == "none" and _finite([getattr(cell, metric).median]):
                ax.axhline(getattr(cell, metric).median, color="black", linestyle="--", linewidth=1,
                           label="no defense")
        if metric == "mse" and ax.get_ylim()[1] > DIVERGED_MSE:
            ax.axhline(DIVERGED_MSE, color="grey", linestyle=":", linewidth=1, label="diverged above")
        ax.set_xlabel("pruning rate (%)")
        ax.set_ylabel(f"median {metric}")
        ax.set_title(title(group, short=True), fontsize=10)
        ax.legend(fontsize=8)
    return fig


def mse_against_accuracy(groups: list[Group], metric: str = "mse") -> Figure:
    fig, axes = _panels(len(groups))
    for ax, group in zip(axes, groups):
        ax.set_yscale("log")
        shown = set()
        for cell in group.cells:
            value = getattr(cell, metric).median
            if cell.accuracy is None or not _finite([value]):
                continue
            colour, marker = cell.setting.info.style
            label = None if cell.setting.defense in shown else cell.setting.defense
            shown.add(cell.setting.defense)
            ax.scatter(100 * cell.accuracy, value, color=colour, marker=marker, label=label)
            ax.annotate(f"{cell.setting.value:g}" if cell.setting.parameter else "", (100 * cell.accuracy, value),
                        fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"FedAvg test accuracy (%), {group.accuracy_dataset or 'none'}")
        ax.set_ylabel(f"median {metric}")
        ax.set_title(title(group, short=True), fontsize=10)
        if shown:
            ax.legend(fontsize=8)
    return fig


FIGURES = {"mse_vs_rate": mse_against_rate, "mse_vs_accuracy": mse_against_accuracy}


def save_figures(groups: list[Group], summary_path: Path) -> list[Path]:
    """Write every figure as ``<summary stem>_<name>.png`` beside the summary; returns the paths."""
    paths = []
    for name, draw in FIGURES.items():
        path = summary_path.with_name(f"{summary_path.stem}_{name}.png")
        figure = draw(groups)
        write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
        paths.append(path)
    return paths
