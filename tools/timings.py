"""Write book/timings.json, the execution time of every chapter, from the last build's own record.

    bash tools/book.sh                                   # a build executes every notebook
    .venv/bin/python tools/timings.py --load "nothing else running"

The build (myst-nb, ``execute_notebooks: force``) keeps how long each notebook took in the Sphinx
environment it pickles, ``_build/.doctrees/environment.pickle`` (``env.nb_metadata[doc]
["exec_data"]``, the same numbers as the build log's "Executed notebook in ... seconds").
This tool copies them, with the machine, the date of the build and the load it ran under (say
what else was running: the numbers are only as quiet as the machine was), into the file that
every chapter's run-time box reads (``soteria_lib.chapter_times``). ``tests/test_chapter_times.py``
checks the file against the latest build. Exit status 2 when there is no build to read.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT = ROOT / "_build" / ".doctrees" / "environment.pickle"
OUTPUT = ROOT / "book" / "timings.json"


def build_times(environment: Path | None = None) -> dict:
    """``{"notebooks/01_....ipynb": seconds}`` and the build's date, as the build recorded them.

    Raises FileNotFoundError without a build, ValueError when a notebook's run failed.
    """
    environment = ENVIRONMENT if environment is None else environment
    if not environment.is_file():
        raise FileNotFoundError(f"no build at {environment.parent.parent}: run bash tools/book.sh first")
    with environment.open("rb") as handle:
        env = pickle.load(handle)  # needs Sphinx and myst-nb importable: run with the book's .venv
    runs = {doc: data["exec_data"] for doc, data in getattr(env, "nb_metadata", {}).items()
            if data.get("exec_data")}
    failed = sorted(doc for doc, run in runs.items() if not run.get("succeeded"))
    if failed:
        raise ValueError(f"these notebooks failed in the build, so their time means nothing: {failed}")
    times = {f"{doc}.ipynb": round(float(run["runtime"]), 1) for doc, run in sorted(runs.items())}
    last = max((run["mtime"] for run in runs.values()), default=None)
    return {"chapters": times, "measured": date.fromtimestamp(last).isoformat() if last else None}


def this_machine() -> str:
    """Cores available to this process and the CPU's model name (from /proc/cpuinfo on Linux)."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores ({model})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", required=True,
                        help="what else ran on the machine during the build, e.g. 'nothing else running'")
    parser.add_argument("--machine", default=None, help="default: this machine's cores and CPU model")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        build = build_times()
    except (FileNotFoundError, ValueError) as error:
        print(f"timings: {error}", file=sys.stderr)
        return 2
    if not build["chapters"]:
        print(f"timings: the build at {ENVIRONMENT} executed no notebook", file=sys.stderr)
        return 2
    data = {"machine": args.machine or this_machine(), "measured": build["measured"], "load": args.load,
            "chapters": build["chapters"]}
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    total = sum(build["chapters"].values())
    print(f"{args.output}: {len(build['chapters'])} chapters, {total:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
