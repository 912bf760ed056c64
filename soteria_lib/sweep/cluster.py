"""The sweep's runs as Ray tasks, on a cluster or on a Ray started for the sweep alone
(``python -m soteria_lib.experiments run GRID --backend ray [--address HOST:PORT]``; chapter 5).

The contract is the local runner's (:func:`soteria_lib.sweep.runner.finished`): ``(task, rows)``
pairs are yielded as runs finish, and the driver alone appends rows to the CSV. Each run is one
Ray task that asks for ``threads`` CPUs (and a GPU when the sweep runs on CUDA). Ray reruns a task
whose worker process died (``MAX_RETRIES``), but a task's result reaches the driver once, from
whichever attempt finished, so a retried run is recorded once. When the sweep stops early
(Ctrl-C, a failed run) the tasks still pending are cancelled and never recorded.

Every node needs this package and the datasets at the path the driver resolves (``--data_root``,
else the driver's ``$SOTERIA_DATA``); results come back to the driver, so only it writes files,
except FedAvg cells, which write their folder on the node that ran them (use a shared disk).
Ray is an optional extra: ``pip install "soteria-lib[ray]"``.
"""
from __future__ import annotations

from ..data import resolve_root
from ..defenses.soteria import keep_recent_norms
from ..extensions import load_extensions
from ..ray_cluster import check_reachable, ray_warnings, require_ray
from .tasks import RunFailed, run_task

MAX_RETRIES = 2  # reruns of a task whose worker process died (a node lost, a killed process)
_WORKER_RECENT = None  # the reuse cache size set in this (worker) process


def _run_on_worker(task, device: str, data_root: str | None, commit: str, threads: int, recent: int):
    """A run inside a Ray worker process (which Ray reuses for later tasks)."""
    import torch


    global _WORKER_RECENT
    torch.set_num_threads(threads)
    load_extensions()  # once per process (the extensions of the driver's environment)
    if _WORKER_RECENT != recent:  # the first task in this process: start Soteria's reuse cache
        keep_recent_norms(recent)
        _WORKER_RECENT = recent
    return run_task(task, device, data_root, commit)


def finished(tasks: list, workers: int, threads: int, device: str, data_root: str | None, commit: str,
             address: str | None = None, recent: int = 0, verbose: bool = False):
    """Yield ``(task, rows)`` as Ray tasks finish, on the cluster at ``address`` (``HOST:PORT``) or,
    without one, on a Ray started here with ``workers * threads`` CPUs (and stopped again at the
    end). ``verbose`` shows Ray's own warnings and its workers' output."""

    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        if address is not None:  # an empty address is refused, not read as "start a local Ray"
            check_reachable(address)
        options = {"address": address} if address is not None else {"num_cpus": workers * threads}
        with ray_warnings(verbose):
            ray.init(**options, include_dashboard=False, log_to_driver=verbose, configure_logging=False)
    data_root = str(resolve_root(data_root))  # the driver's folder, on every node (not each worker's default)
    remote = ray.remote(_run_on_worker).options(num_cpus=threads, num_gpus=1 if device.startswith("cuda") else 0,
                                                 max_retries=MAX_RETRIES)
    pending = {remote.remote(task, device, data_root, commit, threads, recent): task for task in tasks}
    try:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready)
            try:
                rows = ray.get(ready)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                raise RunFailed(task, cause) from exc
            except ray.exceptions.RayError as exc:  # the worker died more often than MAX_RETRIES
                raise RunFailed(task, exc) from exc
            yield task, rows
    finally:  # stopped early, what is still running is not finished work
        if started_here:
            ray.shutdown()  # ends this driver's job, and the cluster stops the job's tasks with it
        else:  # the caller's Ray: leave it connected (a forced cancel can race a finishing task and abort Ray)
            for ref in pending:
                ray.cancel(ref)
