"""Command line of the reproduction sweep (also installed as ``soteria-experiments``).

    python -m soteria_lib.experiments run GRID.toml [--output results/GRID.csv] [--workers N]
                                         [--backend ray [--address HOST:PORT]]
    python -m soteria_lib.experiments summarize RESULTS.csv [--fedavg results/fedavg] [--output results/summary.md]
    python -m soteria_lib.experiments study STUDY.toml [--output results/STUDY.csv] [--workers N]

``run`` skips every run already in the CSV (or FedAvg folder) and appends the others as they
finish; interrupt it at any time and run it again to resume. ``summarize`` writes the Markdown
summary, a JSON twin for notebooks (same name, ``.json``) and two PNG figures beside it. ``study``
runs undefended attacks with a large budget and records their PSNR along the iterations
(:mod:`soteria_lib.sweep.budget_study`); it resumes like ``run`` and writes a Markdown summary
and a figure beside its CSV.

Bad input exits with status 2 and one line on stderr, before any run starts; a failing run stops
the sweep with status 1 (finished rows are kept). Ctrl-C or SIGTERM stops the sweep and its
workers, keeps every finished row, logs the session as interrupted and exits with 130 or 143.
The sweep itself is the library package :mod:`soteria_lib.sweep` (chapter 5).
"""
from __future__ import annotations

import sys
from pathlib import Path

from ._cli import (Parser, check_writable_file, check_writable_folder, exit_with, fail, handle_signals,
                   interrupted_code, parse_command_line, positive_int)
from .data import DatasetNotFoundError
from .files import write_atomic, write_json
from .runtime import resolve_device
from .sweep.budget_study import STUDY_TABLE, curves, figure, load_study, plan_study, report
from .sweep.grid import DEFAULT_FEDAVG_OUTPUT, GridError, load_grid
from .sweep.plots import save_figures
from .sweep.report import render
from .sweep.results import ResultsError
from .ray_cluster import RayMissing, require_ray
from .sweep.runner import BACKENDS, RunFailed, execute, plan, read_sessions
from .sweep.results import read_rows
from .sweep.summary import missing_cells, read_accuracies, summarize, to_json
from .sweep.verdict import WORST, build as build_verdict
from .sweep.verdict_report import render as render_verdict, save_figure as save_verdict_figure

PROG = "soteria-experiments"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Sweep attacks x defenses x datasets and summarise the results.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = commands.add_parser("run", help="run (or resume) the grid of a TOML file")
    run.add_argument("grid", help="grid file, e.g. experiments/teaching.toml")
    run.add_argument("--output", default=None, help="results CSV (default: results/<grid name>.csv)")
    run.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    run.add_argument("--threads", type=positive_int, default=None,
                     help="torch threads per worker (default: cores // workers, at most $OMP_NUM_THREADS)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--data_root", "--data_path", dest="data_root", default=None,
                     help="dataset folder (default: $SOTERIA_DATA)")
    run.add_argument("--fedavg", default=None,
                     help=f"FedAvg folder (default: the grid's, else {DEFAULT_FEDAVG_OUTPUT})")
    run.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    run.add_argument("--backend", default="local", choices=sorted(BACKENDS),
                     help="local: worker processes on this host (default); ray: one Ray task per run")
    run.add_argument("--address", default=None,
                     help="Ray cluster to run on (HOST:PORT of `ray start --head --disable-usage-stats`; "
                          "default: a local Ray with --workers x --threads CPUs); ray backend only")
    study = commands.add_parser("study", help="PSNR against iterations of undefended attacks (choosing a budget)")
    study.add_argument("file", help="study file, e.g. experiments/convergence.toml")
    study.add_argument("--output", default=None, help="CSV (default: results/<file name>.csv); the Markdown "
                                                      "summary and the figure are written beside it")
    study.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    study.add_argument("--threads", type=positive_int, default=None, help="torch threads per worker")
    study.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    study.add_argument("--data_root", "--data_path", dest="data_root", default=None)
    study.add_argument("--no_progress", action="store_true")
    summary = commands.add_parser("summarize", help="tables, matched-accuracy ratios and plots from a results CSV")
    summary.add_argument("csv", help="results CSV written by `run`")
    summary.add_argument("--fedavg", default=DEFAULT_FEDAVG_OUTPUT, help="folder of FedAvg cells")
    summary.add_argument("--grid", help="the grid file of the sweep: the summary then says which cells are complete")
    summary.add_argument("--output", default="results/summary.md",
                         help="Markdown summary; the JSON and PNGs are written beside it")
    return parser


def _fail(command: str, message: str, code: int = 2) -> int:
    return fail(f"{PROG} {command}", message, code)


def run_command(args) -> int:
    output = Path(args.output or f"results/{Path(args.grid).stem}.csv")
    try:
        if args.address is not None and args.backend != "ray":
            raise ValueError("--address names a Ray cluster: add --backend ray")
        if args.backend == "ray":
            require_ray()
        device = str(resolve_device(args.device))
        grid = load_grid(args.grid, args.fedavg)
        check_writable_file(output, "results file")
        if grid.fedavg:
            check_writable_folder(grid.fedavg_output, "FedAvg folder")
        sweep = plan(grid, output, args.data_root)
    except (GridError, ResultsError, DatasetNotFoundError, ValueError, RayMissing) as exc:
        return _fail("run", str(exc))
    print(f"{len(sweep.tasks)} runs to do; {sweep.skipped_runs} reconstructions and {sweep.skipped_fedavg} "
          f"FedAvg runs already done -> {output}", file=sys.stderr)
    try:
        session = execute(sweep, output, args.workers, args.threads, device, args.data_root, not args.no_progress,
                          command=args.command_line, backend=args.backend, address=args.address)
    except RunFailed as exc:
        return _fail("run", f"{exc}; finished runs are kept, run again to resume", 1)
    except ConnectionError as exc:  # Ray found no cluster at --address
        return _fail("run", f"no Ray cluster: {str(exc).splitlines()[0]}", 1)
    except KeyboardInterrupt:
        return _fail("run", "interrupted; finished runs are kept, run again to resume", interrupted_code())
    print(f"done: {session['runs_done']} reconstructions and {session['fedavg_done']} FedAvg runs in "
          f"{session['wall_seconds'] / 60:.1f} min -> {output}", file=sys.stderr)
    return 0


def study_command(args) -> int:
    output = Path(args.output or f"results/{Path(args.file).stem}.csv")
    try:
        device = str(resolve_device(args.device))
        specs = load_study(args.file)
        check_writable_file(output, "study file")
        sweep = plan_study(specs, output, args.data_root)
    except (GridError, ResultsError, DatasetNotFoundError, ValueError) as exc:
        return _fail("study", str(exc))
    print(f"{len(sweep.tasks)} runs to do, {sweep.skipped_runs} already done -> {output}", file=sys.stderr)
    try:
        execute(sweep, output, args.workers, args.threads, device, args.data_root, not args.no_progress,
                command=args.command_line)
    except RunFailed as exc:
        return _fail("study", f"{exc}; finished runs are kept, run again to resume", 1)
    except KeyboardInterrupt:
        return _fail("study", "interrupted; finished runs are kept, run again to resume", interrupted_code())
    found = curves(STUDY_TABLE.read_rows(output))
    picture = output.with_suffix(".png")
    write_atomic(picture, lambda tmp: figure(found).savefig(tmp, format="png", dpi=110))
    text = report(found, output, picture.name)
    write_atomic(output.with_suffix(".md"), lambda tmp: Path(tmp).write_text(text))
    print(f"{output}, {output.with_suffix('.md')}, {picture}", file=sys.stderr)
    return 0


def summarize_command(args) -> int:
    csv_path, output = Path(args.csv), Path(args.output)
    if not csv_path.is_file():
        return _fail("summarize", f"results file {csv_path} does not exist" if not csv_path.exists()
                     else f"results file {csv_path} is not a file")
    try:
        check_writable_file(output, "summary file")
        grid = load_grid(args.grid) if args.grid else None
        if grid is not None and grid.verdict is not None:
            return verdict_summary(csv_path, args.fedavg, grid.verdict, output)
        groups, accuracies = summarize(csv_path, args.fedavg, grid)
        missing = None if grid is None else missing_cells(groups, grid)
        sessions = read_sessions(csv_path)
    except (GridError, ResultsError, ValueError) as exc:
        return _fail("summarize", str(exc))
    output.parent.mkdir(parents=True, exist_ok=True)
    figures = save_figures(groups, accuracies, output)
    text = render(groups, accuracies, csv_path, args.fedavg, sessions, [p.name for p in figures], missing)
    write_json(output.with_suffix(".json"), to_json(groups, accuracies, csv_path, args.fedavg, missing))
    write_atomic(output, lambda tmp: Path(tmp).write_text(text))
    print(f"{output}, {output.with_suffix('.json')}, {', '.join(str(p) for p in figures)}", file=sys.stderr)
    return 0


def verdict_summary(csv_path: Path, fedavg: str, plan, output: Path) -> int:
    """The summary of a grid with a ``[verdict]`` table (:mod:`soteria_lib.sweep.verdict`)."""
    accuracies = read_accuracies(fedavg) if Path(fedavg).is_dir() else {}
    experiments = build_verdict(read_rows(csv_path), accuracies, plan)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure = save_verdict_figure(experiments, accuracies, plan, output)
    sources = (f"From `{csv_path}` ({sum(len(c.by_run) for e in experiments for (s, a), c in e.cells.items() if a != WORST)} "
               f"runs) and the FedAvg cells in `{fedavg}`. Written by `python -m soteria_lib.experiments summarize`.")
    text = render_verdict(experiments, accuracies, plan, sources, figure.name)
    write_json(output.with_suffix(".json"), {"experiments": [
        {**e.params, "cells": [c.record() for c in e.cells.values()], "comparisons": [c.record() for c in e.comparisons],
         "cpu_seconds": e.cpu_seconds} for e in experiments], "fedavg": [a.record() for a in accuracies.values()]})
    write_atomic(output, lambda tmp: Path(tmp).write_text(text))
    print(f"{output}, {output.with_suffix('.json')}, {figure}", file=sys.stderr)
    return 0


COMMANDS = {"run": run_command, "study": study_command, "summarize": summarize_command}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_command_line(PROG, build_parser, argv)
    args.command_line = " ".join(["python -m soteria_lib.experiments", *argv])
    handle_signals()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:  # before any run started, or while the summary was written
        return _fail(args.command, "interrupted", interrupted_code())


if __name__ == "__main__":
    exit_with(main())
