"""Running a grid: skip what is done, run the rest over worker processes, record as runs finish.
Its results are chapter 5's evidence.

The parent process is the only writer: workers return a finished run's row and the parent
appends it to the CSV at once, so an interrupted sweep keeps everything finished so far and a
second call picks up where the first stopped. FedAvg runs are scheduled first (they are the
longest); the reconstructions follow in a fixed shuffled order of their model-and-image groups, so
that the progress bar's ETA averages over every kind of run from the start while the runs of one
group (other defense settings and attackers) follow each other and share Soteria's scores.

A FedAvg cell is :func:`soteria_lib.federated.run_experiment` writing into its folder
(:meth:`~.grid.FedAvgSpec.folder`); one whose ``metrics.json`` holds the requested experiment is
skipped, one written for another is an error (it is never overwritten).
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__
from ..attacks import attack_info
from ..data import load_dataset
from ..defenses.soteria import keep_recent_norms, recent_norms
from ..extensions import load_extensions
from ..federated import read_result, snapshot_path
from ..files import WriteFailed, signals_deferred, write_json
from . import cluster
from .tasks import RunFailed, run_task
from .grid import FedAvgSpec, Grid, GridError
from .results import RESULTS, ResultsError, Table, prepare, run_key

REPOSITORY = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process receives when its parent dies
RECENT_NORMS = 4  # Soteria results a worker keeps for the next runs on the same model and image


def git_commit() -> str:
    """``git rev-parse HEAD`` of the checkout holding this package, or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def default_threads(workers: int) -> int:
    """Torch threads per worker: the usable cores shared out, capped by ``OMP_NUM_THREADS`` if set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads


@dataclass
class Plan:
    """What a sweep still has to run, how much of the grid was already done, and the table its
    rows go to."""

    tasks: list = field(default_factory=list)
    skipped_runs: int = 0
    skipped_fedavg: int = 0
    table: Table = RESULTS


def check_data(reconstructions: list, fedavg: list, data_root: str | None) -> None:
    """Every dataset split the runs read is on disk (no download) and holds its largest target id.
    ``reconstructions``: specs with ``attack``, ``dataset`` and ``target_id``; ``fedavg``: FedAvg specs."""
    needed = {}
    for spec in reconstructions:
        if spec.target_id >= 0:  # -1, the embedded photograph, needs no dataset
            split = (spec.dataset, attack_info(spec.attack).train_split)
            needed[split] = max(needed.get(split, 0), spec.target_id)
    for spec in fedavg:
        for train in (True, False):
            needed.setdefault((spec.dataset, train), 0)
    for (dataset, train), largest in sorted(needed.items()):
        size = len(load_dataset(dataset, data_root, train=train, download=False))
        if largest >= size:
            split = "train" if train else "test"
            raise GridError(f"grid.images: target id {largest} is out of range for the {dataset} {split} "
                            f"split ({size} images)")


def plan(grid: Grid, csv_path: Path, data_root: str | None = None) -> Plan:
    """The runs of ``grid`` that neither ``csv_path`` nor the FedAvg folder holds yet. Every check
    (FedAvg options and folders, datasets, the CSV's columns) comes before the CSV is touched."""
    result = Plan()
    for spec in grid.fedavg:
        if is_done(spec):  # raises on a cell of another configuration
            result.skipped_fedavg += 1
        else:
            result.tasks.append(spec)
    check_data(grid.reconstructions, grid.fedavg, data_root)
    read_sessions(csv_path)  # a damaged log stops the sweep now, not after its runs
    done = prepare(csv_path)
    pending = [s for s in grid.reconstructions if run_key(s.params()) not in done]
    result.skipped_runs = len(grid.reconstructions) - len(pending)
    groups: dict[tuple, list] = {}
    for spec in pending:  # runs on one model and image stay together: Soteria's scores are reused
        groups.setdefault(spec.group(), []).append(spec)
    order = list(groups)
    random.Random(0).shuffle(order)
    result.tasks += [spec for key in order for spec in groups[key]]
    return result


def is_done(spec: FedAvgSpec) -> bool:
    """True when the cell's ``metrics.json`` holds this experiment; raises if it holds another."""
    path = spec.folder() / "metrics.json"
    if not path.exists():
        return False
    stored = read_result(spec.folder())
    for key, value in spec.experiment().identity().items():
        if stored.get(key) != value:
            raise GridError(f"{path} was written for {key} = {stored.get(key)!r}, the grid asks for {value!r}; "
                            "remove it or choose another FedAvg output folder")
    diverged = stored.get("diverged_round")  # a run that diverged keeps no model from that round on
    missing = [k for k in spec.snapshots if not snapshot_path(spec.folder(), k).exists()
               and (diverged is None or k < diverged)]
    if missing:
        raise GridError(f"{spec.folder()} lacks the global model of round {missing[0]} that attacks read; remove "
                        "the folder to train it again")
    return True


def waves(tasks: list) -> list[list]:
    """The tasks in the order they may run: FedAvg cells and runs on initial models first, then the
    runs on the global models those cells keep (each wave finishes before the next starts)."""
    trained = [t for t in tasks if getattr(t, "model_file", None) is not None]
    first = [t for t in tasks if getattr(t, "model_file", None) is None]
    return [wave for wave in (first, trained) if wave]


def without_models(wave: list) -> tuple[list, list]:
    """``(runnable, skipped)``: runs on a global model that its FedAvg cell never produced (training
    diverged before that round) cannot run; the session log counts them, and no row is written."""
    skipped = [t for t in wave if getattr(t, "model_file", None) is not None and not Path(t.model_file).exists()]
    return [t for t in wave if t not in skipped], skipped


def _init_worker(threads: int, parent: int | None = None) -> None:
    """Set the worker's torch threads. A worker process (``parent`` given) leaves Ctrl-C to the
    parent, which stops the sweep, and dies with it, even when the parent is killed (Linux)."""
    import torch

    torch.set_num_threads(threads)
    if parent is None:
        return
    load_extensions()  # a spawned worker registers the extensions' defenses and attacks again
    keep_recent_norms(RECENT_NORMS)  # runs on one model and image follow each other (plan)
    # tqdm's default lock is a named semaphore; a worker stopped by a signal would leak it
    tqdm.set_lock(threading.RLock())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def finished(tasks: list, workers: int, threads: int, device: str, data_root: str | None, commit: str):
    """Yield ``(task, rows)`` as tasks finish: in this process for one worker, else in a pool of
    worker processes, which are stopped (their runs unfinished, never recorded) when the sweep
    stops early."""
    if workers == 1:
        _init_worker(threads)
        with recent_norms(RECENT_NORMS):
            for task in tasks:
                try:
                    result = run_task(task, device, data_root, commit)
                except Exception as exc:
                    raise RunFailed(task, exc) from exc
                yield task, result
        return
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(threads, os.getpid()))
    futures = {pool.submit(run_task, task, device, data_root, commit): task for task in tasks}
    completed = False
    try:
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:
                raise RunFailed(futures[future], exc) from exc
            yield futures[future], result
        completed = True
    finally:
        if not completed:  # runs still in flight are not finished work: stop them, do not wait
            for process in list(pool._processes.values()):  # the executor has no public handle on them
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _on_this_host(tasks, workers, threads, device, data_root, commit, address, verbose):
    if address is not None:
        raise ValueError("an address names a Ray cluster: use it with the ray backend")
    return finished(tasks, workers, threads, device, data_root, commit)


def _on_ray(tasks, workers, threads, device, data_root, commit, address, verbose):
    return cluster.finished(tasks, workers, threads, device, data_root, commit, address, recent=RECENT_NORMS,
                            verbose=verbose)


# Backend name -> how the runs are spread: worker processes here, or Ray tasks (soteria_lib.sweep.cluster).
BACKENDS = {"local": _on_this_host, "ray": _on_ray}


def execute(sweep: Plan, csv_path: Path, workers: int = 1, threads: int | None = None, device: str = "cpu",
            data_root: str | None = None, progress: bool = True, command: str = "", backend: str = "local",
            address: str | None = None, verbose: bool = False, on_start=None) -> dict:
    """Run every task of ``sweep``, appending each finished run's rows to ``csv_path``.

    ``backend`` is a key of :data:`BACKENDS`; ``address`` names a Ray cluster (ray backend only),
    ``verbose`` shows Ray's own warnings. The session is on record in ``<csv>.sessions.json``
    from its first moment (status ``started``, then ``complete``, ``interrupted`` or ``failed``;
    one that stays ``started`` was killed), and ``on_start()`` is called once it is. Returns the
    session record; a failing run stops the sweep with :class:`RunFailed`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    threads = threads or default_threads(workers)
    session = {"command": command, "backend": backend, "address": address, "workers": workers,
               "threads_per_worker": threads, "device": device, "commit": "unknown", "version": __version__,
               "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "runs_skipped": sweep.skipped_runs, "fedavg_skipped": sweep.skipped_fedavg,
               "runs_done": 0, "fedavg_done": 0, "runs_without_model": 0, "status": "started",
               "load_average_start": _load_average()}
    earlier, start, bar = read_sessions(csv_path), time.perf_counter(), None
    try:
        write_json(sessions_path(csv_path), [*earlier, session])
        if on_start is not None:
            on_start()
        session["commit"] = commit = git_commit()
        bar = tqdm(total=len(sweep.tasks), desc="sweep", unit="run", disable=not progress, smoothing=0.05)
        for wave in waves(sweep.tasks):
            wave, skipped = without_models(wave)
            session["runs_without_model"] += len(skipped)
            bar.update(len(skipped))
            for task, rows in BACKENDS[backend](wave, workers, threads, device, data_root, commit, address, verbose):
                if isinstance(task, FedAvgSpec):
                    session["fedavg_done"] += 1
                else:
                    with signals_deferred():  # a row on disk is a run counted: Ctrl-C comes before or after both
                        sweep.table.append_rows(csv_path, rows)
                        session["runs_done"] += 1
                bar.update()
                bar.set_postfix_str(task.describe(), refresh=False)
        session["status"] = "complete"
    except KeyboardInterrupt:
        session["status"] = "interrupted"
        raise
    except BaseException:
        session["status"] = "failed"
        raise
    finally:
        if bar is not None:
            bar.close()
        session["wall_seconds"] = round(time.perf_counter() - start, 1)
        session["load_average_end"] = _load_average()
        try:
            write_json(sessions_path(csv_path), [*earlier, session])
        except WriteFailed:
            if session["status"] == "complete":  # else the error that stopped the sweep is the one to report
                raise
    return session


def _load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages: how shared the cores were."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def sessions_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".sessions.json")


def read_sessions(csv_path: Path) -> list[dict]:
    """The log of every session that ran the sweep of ``csv_path`` (empty if none did)."""
    path = sessions_path(csv_path)
    if not path.exists():
        return []
    try:
        sessions = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} is damaged ({exc}); repair or remove it (the CSV keeps every result)") from None
    if not isinstance(sessions, list):
        raise ResultsError(f"{path} is damaged (not a list of sessions); repair or remove it")
    return sessions
