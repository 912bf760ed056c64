"""One run of a sweep, as a worker runs it: a reconstruction (its CSV row) or a FedAvg cell (its
folder). The local runner's worker processes (:mod:`.runner`) and Ray's workers (:mod:`.cluster`)
both call :func:`run_task`; chapter 5 reads what they produce.
"""
from __future__ import annotations

import time

from ..federated import run_experiment
from ..pipeline import run_reconstruction
from .grid import FedAvgSpec, ReconstructionSpec
from .results import result_row


def reconstruction_rows(spec: ReconstructionSpec, device: str, data_root: str | None, commit: str) -> list[dict]:
    """One reconstruction as its one CSV row."""
    return [reconstruction_row(spec, device, data_root, commit)]


def reconstruction_row(spec: ReconstructionSpec, device: str, data_root: str | None, commit: str) -> dict:
    """One reconstruction as its CSV row; Ctrl-C stops it unrecorded."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run_reconstruction(spec.setup(device, data_root), progress=False)
    if result.metrics["interrupted"]:  # the attack stopped on Ctrl-C: the sweep stops too, unrecorded
        raise KeyboardInterrupt
    return result_row(spec, result.metrics, time.perf_counter() - start, time.process_time() - cpu_start, commit)


def fedavg_cell(spec: FedAvgSpec, device: str, data_root: str | None, commit: str) -> list[dict]:
    """One FedAvg cell, written into its own folder: no CSV rows. A diverged training is a result
    (recorded with the round it diverged in), not a failed run."""
    run_experiment(spec.experiment(), spec.folder(), device, data_root, progress=False, record_divergence=True)
    return []


# Task type -> the function that runs it and returns its CSV rows.
TASK_RUNNERS = {ReconstructionSpec: reconstruction_rows, FedAvgSpec: fedavg_cell}


class RunFailed(RuntimeError):
    """A run raised; the message names the run and the error in one line."""

    def __init__(self, task, error: BaseException):
        super().__init__(f"{task.describe()} failed: {type(error).__name__}: {error}")


def run_task(task, device: str, data_root: str | None, commit: str):
    return TASK_RUNNERS[type(task)](task, device, data_root, commit)
