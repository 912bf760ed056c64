"""One run of a sweep, as a worker runs it: every task (a reconstruction, a FedAvg cell, a budget
study's curve) runs itself and returns its CSV rows. The local runner's worker processes
(:mod:`.runner`) and Ray's workers (:mod:`.cluster`) both call :func:`run_task`; chapter 5 reads
what they produce.
"""
from __future__ import annotations


class RunFailed(RuntimeError):
    """A run raised; the message names the run and the error in one line."""

    def __init__(self, task, error: BaseException):
        super().__init__(f"{task.describe()} failed: {type(error).__name__}: {error}")


def run_task(task, device: str, data_root: str | None, commit: str) -> list[dict]:
    return task.run(device, data_root, commit)
