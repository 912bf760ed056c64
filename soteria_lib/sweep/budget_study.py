"""Choosing an attack's budget by measurement: its PSNR along the iterations (chapter 5).

A study runs each attack on undefended updates of several images and seeds with a large budget
and records the image every ``every`` iterations (DLG: the current dummy; GS: the best restart's
image; the last record is the image the attack returns). The PSNR of each record against the
private image gives one curve per run; a run that stopped early keeps its last value. The summary
reports, at each iteration, the median PSNR over the runs, its interquartile range, and the share
of runs that have reconstructed their image (PSNR of at least :data:`~soteria_lib.metrics.REBUILT_PSNR`, that is
an MSE of at most 0.01 in [0, 1] pixels). A study file is TOML::

    images = [0, 1, 2, 3, 4]
    seeds = [0]

    [studies.dlg]               # a name for the curve
    attack = "dlg"
    datasets = ["mnist", "cifar10"]
    max_iterations = 300
    every = 10
    attack_options = {}         # other fields of the attack's settings
    model_options = {}          # e.g. GS's {width = 32}
    seeds = [0, 1, 2]           # optional: this study's own images or seeds

Each run's rows are appended to the study's CSV in one write, so an interrupted study resumes
where it stopped (``python -m soteria_lib.experiments study FILE``).
"""
from __future__ import annotations

import math
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ..attacks import attack_info
from ..data import DATASETS, dataset_info
from ..limits import check_count, check_counts
from ..models import get_model
from ..metrics import REBUILT_PSNR, image_metrics, is_rebuilt
from ..pipeline import Setup, run_reconstruction
from ..quantiles import quantile
from ..runtime import where_it_ran
from .grid import GridError, check_seeds
from .results import Table, canonical_json, optional_int
from .runner import Plan, check_data, read_sessions

PSNR_FLOOR = -10.0  # dB: the figure's lower limit; exploded reconstructions go far below
STUDY_KEYS = {"attack", "datasets", "max_iterations", "every", "attack_options", "model_options", "images", "seeds"}

# One row per recorded image of a run; the first four columns identify the run.
STUDY_COLUMNS = {
    "study": str, "dataset": str, "target_id": int, "seed": int, "attack": str, "max_iterations": int,
    "every": int, "attack_options": str, "model_options": str, "iteration": int, "psnr": float, "mse": float,
    "stop_reason": str, "iterations": int, "seconds": float, "device": str, "torch_version": str,
    "cpu_capability": str, "torch_threads": optional_int, "commit": str,
}
STUDY_TABLE = Table(STUDY_COLUMNS, ("study", "dataset", "target_id", "seed"))


@dataclass(frozen=True)
class CurveSpec:
    """One run of a study: an undefended attack recording its image every ``every`` iterations."""

    study: str
    attack: str
    dataset: str
    target_id: int
    seed: int
    max_iterations: int
    every: int
    attack_options: dict = field(hash=False)
    model_options: dict = field(hash=False)

    def describe(self) -> str:
        return f"study {self.study} {self.dataset} image {self.target_id} seed {self.seed}"

    def params(self) -> dict:
        return {"study": self.study, "dataset": self.dataset, "target_id": self.target_id, "seed": self.seed}

    def setup(self, device: str = "cpu", data_root: str | None = None) -> Setup:
        return Setup(attack=self.attack, dataset=self.dataset, target_id=self.target_id, seed=self.seed,
                     device=device, data_root=data_root, model_options=dict(self.model_options),
                     attack_options={**self.attack_options, "max_iterations": self.max_iterations})

    def run(self, device: str, data_root: str | None, commit: str) -> list[dict]:
        """A worker's task (:func:`.tasks.run_task`): the curve's rows."""
        return curve_rows(self, device, data_root, commit)


def load_study(path: str | Path) -> list[CurveSpec]:
    """Read and check a study file; every mistake is a one-line :class:`GridError`."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GridError(f"study file {path} cannot be read ({exc})") from None
    _keys(table, {"images", "seeds", "studies"}, str(path))
    studies = table.get("studies", {})
    if not isinstance(studies, dict):
        raise GridError(f"{path}: studies must be [studies.NAME] tables, got {studies!r}")
    specs = []
    for name, study in studies.items():
        where = f"studies.{name}"
        if not isinstance(study, dict):
            raise GridError(f"{where}: expected a table, got {study!r}")
        _keys(study, STUDY_KEYS, where)
        images, seeds = _integers(study, table, "images", where), _integers(study, table, "seeds", where)
        try:
            info = attack_info(study.get("attack", ""))
            every, budget = study.get("every"), study.get("max_iterations")
            if not (isinstance(every, int) and isinstance(budget, int) and 1 <= every <= budget):
                raise ValueError("every and max_iterations are integers with 1 <= every <= max_iterations")
            check_count("max_iterations", budget)
            check_count("records", budget // every, "max_iterations / every")
            options, model_options = study.get("attack_options", {}), study.get("model_options", {})
            if not isinstance(options, dict) or not isinstance(model_options, dict):
                raise ValueError("attack_options and model_options are tables, e.g. {width = 32}")
            check_counts(options)
            check_counts(model_options)
            info.configure(**options, max_iterations=budget)
            datasets = study.get("datasets", [])
            if not isinstance(datasets, list) or not datasets or any(d not in DATASETS for d in datasets):
                raise ValueError(f"datasets must name some of {sorted(DATASETS)}, in a list")
            found = [CurveSpec(name, info.name, dataset, image, seed, budget, every, options, model_options)
                     for dataset in datasets for image in images for seed in seeds]
            for dataset in datasets:  # the model options, by building each model (shapes only, no memory)
                _build_model(next(s for s in found if s.dataset == dataset).setup())
        except (ValueError, TypeError) as exc:
            raise GridError(f"{where}: {exc}") from None
        specs += found
    if not specs:
        raise GridError(f"{path}: no [studies.NAME] table")
    return specs


def _keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise GridError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _build_model(setup: Setup) -> None:
    """Build the run's model on PyTorch's meta device: every option is checked, nothing allocated."""
    name, options = setup.model_spec()
    info = dataset_info(setup.dataset)
    with torch.device("meta"):
        get_model(name, info.shape, info.num_classes, **options)


def _integers(study: dict, table: dict, key: str, where: str) -> list[int]:
    """A study's own ``images`` or ``seeds``, else the file's; seeds are checked."""
    values = study.get(key, table.get(key))
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        raise GridError(f"{where}: {key} must be a non-empty list of integers")
    if key == "images" and min(values) < -1:
        raise GridError(f"{where}: images are target ids, -1 (the embedded photograph) or >= 0, got {min(values)}")
    return check_seeds(values, f"{where}: seeds") if key == "seeds" else values


def curve_rows(spec: CurveSpec, device: str, data_root: str | None, commit: str) -> list[dict]:
    """Run ``spec`` and return one row per recorded image; Ctrl-C stops it unrecorded."""
    start = time.perf_counter()
    result = run_reconstruction(spec.setup(device, data_root), progress=False, frame_every=spec.every)
    if result.metrics["interrupted"]:
        raise KeyboardInterrupt
    seconds = time.perf_counter() - start
    normalization = result.update.metadata.normalization
    truth = normalization.normalize(result.target.image).unsqueeze(0)
    run = {**spec.params(), "attack": spec.attack, "max_iterations": spec.max_iterations, "every": spec.every,
           "attack_options": canonical_json(spec.attack_options), "model_options": canonical_json(spec.model_options),
           "stop_reason": result.metrics["stop_reason"], "iterations": result.metrics["iterations"],
           "seconds": round(seconds, 3), **where_it_ran(device), "commit": commit}
    rows = []
    for iteration, image in result.reconstruction.frames:
        metrics = image_metrics(image.unsqueeze(0) if image.dim() == 3 else image, truth.cpu(), normalization)
        rows.append({**run, "iteration": iteration, "psnr": metrics["psnr"], "mse": metrics["mse"]})
    return rows



def plan_study(specs: list[CurveSpec], csv_path: Path, data_root: str | None = None) -> Plan:
    """The runs of a study that ``csv_path`` does not hold yet (data and files checked first)."""
    check_data(specs, [], data_root)
    read_sessions(csv_path)
    done = STUDY_TABLE.prepare(csv_path)
    pending = [s for s in specs if STUDY_TABLE.run_key(s.params()) not in done]
    return Plan(pending, len(specs) - len(pending), 0, STUDY_TABLE)


@dataclass
class Curve:
    """A study's curve on one dataset: per iteration, the median PSNR with its quartiles and the
    share of runs reconstructed so far."""

    study: str
    dataset: str
    runs: int
    iterations: list[int]
    median_psnr: list[float]
    q1_psnr: list[float]
    q3_psnr: list[float]
    reconstructed: list[float]
    seconds_per_run: float
    stop_reasons: dict


def _value_at(records: list[tuple[int, float]], iteration: int) -> float:
    """The last recorded value at or before ``iteration`` (a stopped run keeps its image)."""
    value = records[0][1]
    for step, psnr in records:
        if step > iteration:
            break
        value = psnr
    return value


def curves(rows: list[dict]) -> list[Curve]:
    runs: dict[tuple, list[dict]] = {}
    for row in rows:
        runs.setdefault((row["study"], row["dataset"], row["target_id"], row["seed"]), []).append(row)
    by_curve: dict[tuple, list[list[dict]]] = {}
    for (study, dataset, _, _), run_rows in runs.items():
        by_curve.setdefault((study, dataset), []).append(sorted(run_rows, key=lambda r: r["iteration"]))
    result = []
    for (study, dataset), run_list in sorted(by_curve.items()):
        first = run_list[0][0]
        grid = list(range(0, first["max_iterations"] + 1, first["every"]))
        if grid[-1] != first["max_iterations"]:
            grid.append(first["max_iterations"])
        records = [[(r["iteration"], r["psnr"] if math.isfinite(r["psnr"]) else -math.inf) for r in run]
                   for run in run_list]
        at = [[_value_at(rec, t) for rec in records] for t in grid]
        reasons: dict[str, int] = {}
        for run in run_list:
            reasons[run[0]["stop_reason"]] = reasons.get(run[0]["stop_reason"], 0) + 1
        result.append(Curve(study, dataset, len(run_list), grid,
                            [quantile(v, 0.5) for v in at], [quantile(v, 0.25) for v in at],
                            [quantile(v, 0.75) for v in at],
                            [sum(is_rebuilt(p) for p in v) / len(v) for v in at],
                            sum(run[0]["seconds"] for run in run_list) / len(run_list), reasons))
    return result


def figure(found: list[Curve]) -> Figure:
    """Median PSNR (with interquartile band) and share reconstructed against iterations, two
    panels per dataset stacked in one column (narrow enough for a phone), one line per study."""
    datasets = sorted({c.dataset for c in found})
    fig = Figure(figsize=(4.0, 2.9 * 2 * len(datasets)), layout="constrained")
    axes = fig.subplots(2 * len(datasets), 1, squeeze=False)[:, 0]
    for column, dataset in enumerate(datasets):
        top, bottom = axes[2 * column], axes[2 * column + 1]
        for curve in (c for c in found if c.dataset == dataset):
            label = f"{curve.study} ({curve.runs} runs)"
            line, = top.plot(curve.iterations, curve.median_psnr, label=label)
            top.fill_between(curve.iterations, curve.q1_psnr, curve.q3_psnr, color=line.get_color(), alpha=0.15,
                             linewidth=0)
            bottom.plot(curve.iterations, [100 * r for r in curve.reconstructed], color=line.get_color(), label=label)
        top.axhline(REBUILT_PSNR, color="grey", linestyle=":", linewidth=1)
        top.set_title(f"{dataset}: median PSNR", fontsize=10)
        top.set_ylabel("median PSNR (dB)")
        top.set_ylim(bottom=max(top.get_ylim()[0], PSNR_FLOOR))  # below 0 dB an image is noise
        bottom.set_title(f"{dataset}: runs reconstructed", fontsize=10)
        bottom.set_ylabel(f"% with PSNR >= {REBUILT_PSNR:g} dB")
        bottom.set_ylim(-5, 105)
        bottom.set_xlabel("iteration")
        for ax in (top, bottom):
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3)
        top.legend(fontsize=7)
    return fig


def report(found: list[Curve], csv_path: Path, picture: str) -> str:
    """The study as Markdown: per curve, a few iterations' median PSNR and share reconstructed."""
    lines = ["# Attack budgets: PSNR against iterations", "",
             f"From `{csv_path}`, written by `python -m soteria_lib.experiments study`. Undefended attacks; "
             f"a run counts as reconstructed at an iteration when its image has PSNR >= {REBUILT_PSNR:g} dB "
             "(MSE <= 0.01 in [0, 1] pixels). Medians over images and seeds; a run that stopped early keeps its "
             "last image.", ""]
    for curve in found:
        marks = sorted({curve.iterations[min(len(curve.iterations) - 1, round(f * (len(curve.iterations) - 1)))]
                        for f in (0, 0.1, 0.25, 0.5, 0.75, 1.0)})
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(curve.stop_reasons.items()))
        lines += [f"## {curve.study} on {curve.dataset}", "",
                  f"{curve.runs} runs, {curve.seconds_per_run:.1f} s per run on average; stopped: {reasons}.", "",
                  "| iteration | median PSNR (dB) | IQR | reconstructed |", "| --- | --- | --- | --- |"]
        for t in marks:
            i = curve.iterations.index(t)
            lines.append(f"| {t} | {curve.median_psnr[i]:.1f} | {curve.q1_psnr[i]:.1f} – {curve.q3_psnr[i]:.1f} | "
                         f"{100 * curve.reconstructed[i]:.0f} % |")
        lines.append("")
    return "\n".join(lines + [f"![PSNR against iterations]({picture})", ""])
