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

Bad input exits with status 2 and one line on stderr, before any run starts; a failing run, or a
disk that fills during the sweep, stops it with status 1 (finished rows are kept, none half
written). Ctrl-C or SIGTERM stops the sweep and its workers, keeps every finished row, logs the
session as interrupted and exits with 130 or 143. One process writes a results file at a time:
``run`` and ``study`` lock their CSV, ``summarize`` its output (:func:`soteria_lib.files.one_writer`),
and a second one is refused naming the PID that holds it. ``summarize`` refuses a CSV that holds
a run twice; ``--keep_first`` reads the first row of each. ``--verbose`` shows Ray's own warnings.
The sweep itself is the library package :mod:`soteria_lib.sweep` (chapter 5).
"""
from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

from ._cli import (Parser, check_writable_file, check_writable_folder, command, count, exit_with, fail,
                   interrupted_code, parse_command_line, quiet_start, ray_address)

PROG = "soteria-experiments"
if __name__ == "__main__":
    quiet_start(PROG)  # before torch is imported: a Ctrl-C now is one line, not a traceback

from .data import DatasetNotFoundError  # noqa: E402 (after the signal handlers)
from .files import WriteFailed, json_writer, one_writer, text_writer, write_together
from .runtime import resolve_device
from .sweep.budget_study import STUDY_TABLE, curves, figure, load_study, plan_study, report
from .sweep.grid import DEFAULT_FEDAVG_OUTPUT, GridError, load_grid
from .sweep.plots import figure_writers
from .sweep.report import render
from .sweep.results import ResultsError
from .ray_cluster import RayMissing, require_ray
from .sweep.runner import BACKENDS, RunFailed, execute, plan, read_sessions
from .sweep.results import RESULTS, read_rows
from .sweep.accuracy import read_accuracies
from .sweep.summary import missing_cells, summarize, to_json
from .sweep.findings import findings, progress, render as render_findings
from .sweep.verdict import WORST, Design, build as build_verdict
from .sweep.verdict_report import figure_writer as verdict_figure_writer, render as render_verdict

# Bad input, refused before any work: one line, exit status 2. A results file that another
# process writes (files.FileInUse) is a ValueError; an output the disk refuses before the first
# run (the CSV's header) a WriteFailed.
REFUSED = (GridError, ResultsError, DatasetNotFoundError, ValueError, RayMissing, WriteFailed)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Sweep attacks x defenses x datasets and summarise the results.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = commands.add_parser("run", help="run (or resume) the grid of a TOML file")
    run.add_argument("grid", help="grid file, e.g. experiments/teaching.toml")
    run.add_argument("--output", default=None, help="results CSV (default: results/<grid name>.csv)")
    run.add_argument("--workers", type=count("workers"), default=1, help="worker processes (default 1)")
    run.add_argument("--threads", type=count("threads"), default=None,
                     help="torch threads per worker (default: cores // workers, at most $OMP_NUM_THREADS)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--data_root", "--data_path", dest="data_root", default=None,
                     help="dataset folder (default: $SOTERIA_DATA)")
    run.add_argument("--fedavg", default=None,
                     help=f"FedAvg folder (default: the grid's, else {DEFAULT_FEDAVG_OUTPUT})")
    run.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    run.add_argument("--backend", default="local", choices=sorted(BACKENDS),
                     help="local: worker processes on this host (default); ray: one Ray task per run")
    run.add_argument("--address", type=ray_address, default=None,
                     help="Ray cluster to run on (HOST:PORT of `ray start --head --disable-usage-stats`; "
                          "default: a local Ray with --workers x --threads CPUs); ray backend only")
    run.add_argument("--verbose", action="store_true", help="ray backend: show Ray's own warnings and logs")
    study = commands.add_parser("study", help="PSNR against iterations of undefended attacks (choosing a budget)")
    study.add_argument("file", help="study file, e.g. experiments/convergence.toml")
    study.add_argument("--output", default=None, help="CSV (default: results/<file name>.csv); the Markdown "
                                                      "summary and the figure are written beside it")
    study.add_argument("--workers", type=count("workers"), default=1, help="worker processes (default 1)")
    study.add_argument("--threads", type=count("threads"), default=None, help="torch threads per worker")
    study.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    study.add_argument("--data_root", "--data_path", dest="data_root", default=None)
    study.add_argument("--no_progress", action="store_true")
    summary = commands.add_parser("summarize", help="tables, matched-accuracy ratios and plots from a results CSV")
    summary.add_argument("csv", help="results CSV written by `run`")
    summary.add_argument("--fedavg", default=None,
                         help="folder of FedAvg cells (default: with --grid, the grid's, or none where it trains "
                              f"none; else {DEFAULT_FEDAVG_OUTPUT})")
    summary.add_argument("--grid", help="the grid file of the sweep: the summary then says which cells are complete")
    summary.add_argument("--output", default="results/summary.md",
                         help="Markdown summary; the JSON and PNGs are written beside it")
    summary.add_argument("--keep_first", action="store_true",
                         help="read a CSV that holds a run more than once (two sweeps wrote it at once), keeping "
                              "the first row of each; without it such a CSV is refused")
    return parser


def _fail(command: str, message: str, code: int = 2) -> int:
    return fail(f"{PROG} {command}", message, code)


def run_command(args) -> int:
    output = Path(args.output or f"results/{Path(args.grid).stem}.csv")
    with ExitStack() as held:
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
            held.enter_context(one_writer(output, "results file"))
            sweep = plan(grid, output, args.data_root)
        except REFUSED as exc:
            return _fail("run", str(exc))

        def announce():
            print(f"{len(sweep.tasks)} runs to do; {sweep.skipped_runs} reconstructions and {sweep.skipped_fedavg} "
                  f"FedAvg runs already done -> {output}", file=sys.stderr)

        try:
            session = execute(sweep, output, args.workers, args.threads, device, args.data_root, not args.no_progress,
                              command=args.command_line, backend=args.backend, address=args.address,
                              verbose=args.verbose, on_start=announce)
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
    with ExitStack() as held:
        try:
            device = str(resolve_device(args.device))
            specs = load_study(args.file)
            check_writable_file(output, "study file")
            held.enter_context(one_writer(output, "study file"))
            sweep = plan_study(specs, output, args.data_root)
        except REFUSED as exc:
            return _fail("study", str(exc))
        try:
            execute(sweep, output, args.workers, args.threads, device, args.data_root, not args.no_progress,
                    command=args.command_line, on_start=lambda: print(
                        f"{len(sweep.tasks)} runs to do, {sweep.skipped_runs} already done -> {output}",
                        file=sys.stderr))
        except RunFailed as exc:
            return _fail("study", f"{exc}; finished runs are kept, run again to resume", 1)
        except KeyboardInterrupt:
            return _fail("study", "interrupted; finished runs are kept, run again to resume", interrupted_code())
        found = curves(STUDY_TABLE.read_rows(output))
        picture = output.with_suffix(".png")
        write_together({picture: lambda tmp: figure(found).savefig(tmp, format="png", dpi=110),
                        output.with_suffix(".md"): text_writer(report(found, output, picture.name))})
    print(f"{output}, {output.with_suffix('.md')}, {picture}", file=sys.stderr)
    return 0


def _fedavg_folder(given: str | None, grid) -> str | None:
    """The FedAvg cells a summary reads: the folder given, else the grid's where it trains any and
    none where it trains none (a tuning grid's rows are never compared at matched accuracy), else
    the default folder."""
    if given is not None:
        return given
    if grid is None:
        return DEFAULT_FEDAVG_OUTPUT
    return str(grid.fedavg_output) if grid.fedavg else None


def summarize_command(args) -> int:
    csv_path, output = Path(args.csv), Path(args.output)
    with ExitStack() as held:
        try:
            if not csv_path.is_file():
                raise ValueError(f"results file {csv_path} does not exist" if not csv_path.exists()
                                 else f"results file {csv_path} is not a file")
            check_writable_file(output, "summary file")
            held.enter_context(one_writer(output, "summary file"))
            grid = load_grid(args.grid, args.fedavg) if args.grid else None
            fedavg = _fedavg_folder(args.fedavg, grid)
            if grid is not None and grid.verdict is not None:
                return verdict_summary(csv_path, fedavg, grid, output, args.keep_first)
            groups, accuracies = summarize(csv_path, fedavg, grid, args.keep_first)
            missing = None if grid is None else missing_cells(groups, grid)
            sessions = read_sessions(csv_path)
        except REFUSED as exc:
            return _fail("summarize", str(exc))
        figures = figure_writers(groups, accuracies, output)
        text = render(groups, accuracies, csv_path, fedavg, sessions, [p.name for p in figures], missing)
        write_together({**figures, output.with_suffix(".json"): json_writer(
                            to_json(groups, accuracies, csv_path, fedavg, missing)),
                        output: text_writer(text)})
    print(f"{output}, {output.with_suffix('.json')}, {', '.join(str(p) for p in figures)}", file=sys.stderr)
    return 0


def verdict_summary(csv_path: Path, fedavg: str | None, grid, output: Path, keep_first: bool = False) -> int:
    """The summary of a grid with a ``[verdict]`` table (:mod:`soteria_lib.sweep.verdict`), its findings
    first (:mod:`soteria_lib.sweep.findings`); the Markdown, its JSON twin and the figure are written
    together or not at all."""
    accuracies = read_accuracies(fedavg) if fedavg is not None and Path(fedavg).is_dir() else {}
    rows = RESULTS.unique_rows(read_rows(csv_path), csv_path, keep_first)
    design = Design.of(grid, grid.verdict)
    experiments = build_verdict(rows, accuracies, grid.verdict, design)
    state = progress(grid, rows, accuracies)
    found = findings(experiments, accuracies, grid.verdict, design)
    figure, draw = verdict_figure_writer(experiments, accuracies, grid.verdict, output)
    sources = (f"From `{csv_path}` ({sum(len(c.by_run) for e in experiments for (s, a), c in e.cells.items() if a != WORST)} "
               "runs) and " + ("no FedAvg cells" if fedavg is None else f"the FedAvg cells in `{fedavg}`")
               + ". Written by `python -m soteria_lib.experiments summarize`.")
    text = render_verdict(experiments, accuracies, grid.verdict, sources, figure.name, render_findings(found, state),
                          state.text())
    record = {"progress": vars(state), "findings": [vars(f) for f in found], "experiments": [
        {**e.params, "cells": [c.record() for c in e.cells.values()], "comparisons": [c.record() for c in e.comparisons],
         "cpu_seconds": e.cpu_seconds} for e in experiments], "fedavg": [a.record() for a in accuracies.values()]}
    write_together({figure: draw, output.with_suffix(".json"): json_writer(record), output: text_writer(text)})
    print(f"{output}, {output.with_suffix('.json')}, {figure}", file=sys.stderr)
    return 0


COMMANDS = {"run": run_command, "study": study_command, "summarize": summarize_command}


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_command_line(PROG, build_parser, argv)
    args.command_line = " ".join(["python -m soteria_lib.experiments", *argv])
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:  # before any run started, or while the summary was written
        return _fail(args.command, "interrupted", interrupted_code())
    except WriteFailed as exc:  # an output the disk refused while the command worked
        return _fail(args.command, str(exc), 1)


if __name__ == "__main__":
    exit_with(main())
