"""The summary as Markdown: headline ratios, accuracies used, one table per experiment, the paper
(``results/summary.md``, read by chapter 5)."""
from __future__ import annotations

import math

from ..defenses import DefenseSetting
from ..metrics import DIVERGED_MSE
from .summary import CAPPED_RULE, CONVENTIONS, MATCHING_RULE, PUBLISHED_GS_CIFAR10, Group, fedavg_records

DATASET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def title(group: Group, short: bool = False) -> str:
    """The experiment's name; ``short`` (figure panels) leaves out the scale and attack options."""
    p = group.params
    options = "" if p["attack_options"] == "{}" or short else f", options {p['attack_options']}"
    attacker = "" if p["attacker"] == "plain" else f", {p['attacker']} attacker"
    scale = "" if short else f"{p['scale']} scale, "
    return (f"{p['attack'].upper()} on {DATASET_NAMES.get(p['dataset'], p['dataset'])} "
            f"({scale}{p['max_iterations']} iterations{attacker}{options})")


def accuracy_note(group: Group) -> str:
    source = group.accuracy_dataset
    if source is None:
        return "No FedAvg cells: no accuracies, no matched ratios."
    if source != group.params["dataset"]:
        return (f"Accuracies from the {DATASET_NAMES.get(source, source)} FedAvg cells: this dataset has "
                "none, so the matching assumes the same accuracy ordering of the defense settings.")
    return f"Accuracies from the {DATASET_NAMES.get(source, source)} FedAvg cells."


def headline(groups: list[Group]) -> list[str]:
    rows = []
    for g in groups:
        for m in g.matches:
            if m.baseline.defense != "prune":
                continue
            cells = {c.setting: c for c in g.cells}
            soteria = cells.get(m.soteria)
            rows.append([g.params["attack"].upper(), DATASET_NAMES.get(g.params["dataset"], g.params["dataset"]),
                         f"{m.baseline.value:g} %", percent(m.baseline_accuracy),
                         "–" if m.soteria is None else f"{m.soteria.value:g} %", percent(m.soteria_accuracy),
                         fmt(cells[m.baseline].mse.median), fmt(soteria and soteria.mse.median),
                         f"**{fmt(m.ratio_mse)}**", fmt(m.ratio_capped), fmt(m.ratio_mse_normalized)])
    return table(["attack", "dataset", "pruning rate", "its accuracy", "matched Soteria rate", "its accuracy",
                  "median MSE, pruning", "median MSE, Soteria", "ratio (mse)", "ratio, MSE capped at 1",
                  "ratio (mse_normalized)"], rows)


def group_section(group: Group) -> list[str]:
    lines = [f"### {title(group)}", "", accuracy_note(group), ""]
    lines += table(
        ["defense", "runs", "diverged", "median mse", "IQR mse", "median mse_normalized", "IQR mse_normalized",
         "median PSNR (dB)", "median SSIM", "label accuracy", "FedAvg accuracy"],
        [[c.setting.label(), str(c.runs), str(c.diverged), fmt(c.mse.median), f"{fmt(c.mse.q1)} – {fmt(c.mse.q3)}",
          fmt(c.mse_normalized.median), f"{fmt(c.mse_normalized.q1)} – {fmt(c.mse_normalized.q3)}",
          fmt(c.psnr_median), fmt(c.ssim_median), fmt(c.label_accuracy, 2), percent(c.accuracy)]
         for c in group.cells])
    if group.matches:
        lines += ["", "Soteria at matched accuracy:", ""]
        lines += table(["baseline", "its accuracy", "matched Soteria", "its accuracy", "ratio (mse)",
                        "ratio, capped", "ratio (mse_normalized)"],
                       [[m.baseline.label(), percent(m.baseline_accuracy),
                         "none at least as accurate" if m.soteria is None else m.soteria.label(),
                         percent(m.soteria_accuracy), fmt(m.ratio_mse), fmt(m.ratio_capped),
                         fmt(m.ratio_mse_normalized)]
                        for m in group.matches])
    if group.equal_rate:
        lines += ["", "Soteria against pruning at the same rate (the published figure's comparison):", ""]
        lines += table(["rate", "median mse, Soteria", "median mse, pruning", "ratio (mse)", "ratio, capped",
                        "ratio (mse_normalized)"],
                       [[f"{e['rate']:g} %", fmt(e["mse_soteria"]), fmt(e["mse_prune"]), fmt(e["ratio_mse"]),
                         fmt(e["ratio_capped"]), fmt(e["ratio_mse_normalized"])] for e in group.equal_rate])
    return lines + [""]


def paper_section(groups: list[Group]) -> list[str]:
    """Our GS CIFAR-10 medians (normalised MSE) beside the published figure's values."""
    lines = ["## Beside the published figure (GS, CIFAR-10, MSE in normalised space)", "",
             "Published: one image (the authors' demo), untrained ConvNet-64, 24,000 iterations; values read off "
             "the figure. Ours: the median over the images and seeds of each GS CIFAR-10 experiment below.", ""]
    found = False
    for g in groups:
        if g.params["attack"] != "gs" or g.params["dataset"] != "cifar10":
            continue
        found = True
        medians = {(c.setting.defense, c.setting.value): c.mse_normalized.median for c in g.cells}
        rates = sorted(set(PUBLISHED_GS_CIFAR10["soteria"]) | {v for d, v in medians if d in ("soteria", "prune")})
        lines += [f"{title(g)}; undefended median: {fmt(medians.get(('none', 0.0)))} (the figure has none):", ""]
        lines += table(["rate", "Soteria, paper", "Soteria, ours", "pruning, paper", "pruning, ours"],
                       [[f"{r:g} %", fmt(PUBLISHED_GS_CIFAR10["soteria"].get(r)), fmt(medians.get(("soteria", r))),
                         fmt(PUBLISHED_GS_CIFAR10["prune"].get(r)), fmt(medians.get(("prune", r)))] for r in rates])
        lines.append("")
    return lines if found else []


def cost_section(groups: list[Group], sessions: list[dict]) -> list[str]:
    """Measured wall time of every sweep session, and the runs' CPU time (their cost on free cores)."""
    runs = [sum(c.runs for c in g.cells) for g in groups]
    lines = ["## Cost (measured)", ""]
    lines += table(["experiment", "runs", "CPU time", "per run"],
                   [[title(g), str(n), f"{g.cpu_seconds / 60:.1f} min", f"{g.cpu_seconds / n:.2f} s"]
                    for g, n in zip(groups, runs)])
    total = sum(g.cpu_seconds for g in groups)
    lines += ["", f"All reconstructions: {total / 60:.1f} CPU-minutes, i.e. {total / 120:.1f} minutes of wall time "
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
           plots: list[str]) -> str:
    runs = sum(c.runs for g in groups for c in g.cells)
    lines = ["# Reproduction sweep: summary", "",
             f"From `{csv_path}` ({runs} reconstruction runs) and the FedAvg cells in `{fedavg_root}`. "
             "Written by `python -m soteria_lib.experiments summarize`.", "",
             f"- `mse`: {CONVENTIONS['mse']}.", f"- `mse_normalized`: {CONVENTIONS['mse_normalized']}.",
             f"- Diverged: non-finite MSE, or `mse` > {DIVERGED_MSE:g} (farther from the truth than any two "
             "images in [0, 1] can be). Medians and IQRs include diverged runs.",
             f"- Matched accuracy: {MATCHING_RULE}", f"- Capped ratio: {CAPPED_RULE}", "",
             "## Soteria over pruning at matched accuracy", ""]
    lines += headline(groups) + [""]
    lines += ["## FedAvg accuracy used", "",
              "One training run per setting. The standard error is the test set's binomial one; training "
              "noise comes on top, so differences of about a point or less do not rank the defenses.", ""]
    lines += table(["dataset", "defense", "final test accuracy", "standard error", "test examples", "rounds",
                    "clients", "scale", "model"],
                   [[r["dataset"], DefenseSetting(r["defense"], r["value"]).label(),
                     percent(r["final_accuracy"]), percent(r["standard_error"]), str(r["test_examples"]),
                     str(r["rounds"]), str(r["clients"]), str(r["scale"]), str(r["model"])]
                    for r in fedavg_records(accuracies)]) + [""]
    lines += ["## Per experiment", ""]
    for group in groups:
        lines += group_section(group)
    lines += paper_section(groups)
    lines += cost_section(groups, sessions)
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)
