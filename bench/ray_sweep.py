"""The sweep on a local Ray against the multiprocessing runner: same grid, same process.

    python bench/ray_sweep.py                      # 2 workers x 1 thread, 3 cells x 16 seeds
    python bench/ray_sweep.py --seeds 40 --iterations 60

Both run the same grid (DLG on the embedded photograph, no defense, Soteria 40 %, pruning 40 %;
no dataset needed) into their own fresh CSV through ``runner.execute``: the local runner with a
pool of ``--workers`` spawned processes, then Ray with one task per run on a Ray started here with
``workers x threads`` CPUs. Ray's start-up (``ray.init``) is timed on its own and reported apart
from its sweep time; the pool's start-up is inside its sweep time, as a user sees it. Ratios
above 1 mean Ray took longer. Each backend runs ``--repeats`` times on fresh CSVs (best taken),
the local runner first.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray

from soteria_lib.sweep.grid import load_grid
from soteria_lib.sweep.runner import execute, plan

GRID = """
scale = "teaching"
images = [-1]
seeds = [{seeds}]

[defenses]
none = true
soteria = [40]
prune = [40]

[attacks.dlg]
datasets = ["mnist"]
max_iterations = {iterations}
"""


def sweep_seconds(grid_path: Path, folder: Path, backend: str, workers: int, threads: int) -> tuple[float, int]:
    csv = folder / f"{backend}.csv"
    sweep = plan(load_grid(grid_path), csv)
    start = time.perf_counter()
    execute(sweep, csv, workers, threads, "cpu", progress=False, backend=backend)
    return time.perf_counter() - start, len(sweep.tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    text = GRID.format(seeds=", ".join(map(str, range(args.seeds))), iterations=args.iterations)
    local, on_ray, startups = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "bench.toml"
        grid.write_text(text)
        for repeat in range(args.repeats):
            folder = Path(tmp) / f"local{repeat}"
            folder.mkdir()
            seconds, runs = sweep_seconds(grid, folder, "local", args.workers, args.threads)
            local.append(seconds)
        for repeat in range(args.repeats):
            start = time.perf_counter()
            ray.init(num_cpus=args.workers * args.threads, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            startups.append(time.perf_counter() - start)
            folder = Path(tmp) / f"ray{repeat}"
            folder.mkdir()
            seconds, _ = sweep_seconds(grid, folder, "ray", args.workers, args.threads)
            on_ray.append(seconds)
            ray.shutdown()
    best_local, best_ray, startup = min(local), min(on_ray), min(startups)
    print(f"{runs} runs (DLG, {args.iterations} L-BFGS steps), {args.workers} workers x {args.threads} thread(s)")
    print(f"multiprocessing runner: {best_local:7.2f} s  ({runs / best_local:.2f} runs/s, pool start-up included)")
    print(f"ray, sweep only:        {best_ray:7.2f} s  ({runs / best_ray:.2f} runs/s)")
    print(f"ray start-up (init):    {startup:7.2f} s")
    print(f"ratio ray / multiprocessing, sweep only:       {best_ray / best_local:.2f}")
    print(f"ratio ray / multiprocessing, with ray.init:    {(best_ray + startup) / best_local:.2f}")


if __name__ == "__main__":
    main()
