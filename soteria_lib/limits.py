"""The largest counts a user may set: iterations, restarts, model width, FedAvg's schedule, workers.

A count beyond its bound is a typo, or one that the code downstream cannot hold: a Python integer
above 2**63 overflows the C sizes of torch and tqdm with a traceback, and tensors sized by a
count (restarts, width) outgrow any memory long before that. The command lines check their flags
against :data:`LIMITS` when they parse them, and grid and study files are checked when they are
loaded, so such a number is one line and exit status 2 before any work, never a crash in the
first run. No chapter teaches it; the README's "What every command line promises" states it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """The range ``[minimum, maximum]`` of an integer count, and why the maximum is where it is."""

    minimum: int
    maximum: int
    why: str

    def check(self, name: str, value) -> int:
        """``value`` if it is an integer in range, else a one-line ``ValueError`` naming ``name``."""
        if isinstance(value, bool) or not isinstance(value, int) or value < self.minimum:
            raise ValueError(f"{name} must be an integer >= {self.minimum}, got {value!r}")
        if value > self.maximum:
            raise ValueError(f"{name} must be at most {self.maximum:,} ({self.why}), got {value!r}")
        return value


STEPS = "at a millisecond or more per step, 10**9 steps take over 11 days"
# Count name -> its range. The names are those of the attack settings, model options, FedAvg
# options, study keys and command-line flags that carry them.
LIMITS = {
    "max_iterations": Limit(0, 10**9, STEPS),
    "patience": Limit(1, 10**9, STEPS),
    "every": Limit(1, 10**9, STEPS),
    "records": Limit(1, 10**4, "a study keeps every recorded image in memory and writes a row for each"),
    "restarts": Limit(1, 1000, "every restart is a dummy image with its own optimiser state, batched "
                               "through the model: 1,000 already need gigabytes"),
    "width": Limit(1, 512, "the ConvNet's weights grow with its width squared: width 512, eight times "
                           "the published 64, holds 180 million parameters"),
    "rounds": Limit(0, 10**6, "every checkpoint rewrites the whole history, one record per round"),
    "local_epochs": Limit(1, 10**6, "an epoch passes over a client's whole data"),
    "clients": Limit(1, 10**6, "one index tensor per client; the largest training split has 60,000 "
                               "images, so more clients are only empty ones"),
    "batch_size": Limit(1, 10**6, "larger than any training split: a bigger batch is the client's whole data"),
    "workers": Limit(1, 1024, "one process each; more than the machine's cores only slows a sweep"),
    "threads": Limit(1, 1024, "torch threads per worker; more than the machine's cores only slows it"),
}


def check_count(name: str, value, where: str | None = None) -> int:
    """``value`` within ``LIMITS[name]``, else a one-line ``ValueError`` that names ``where``
    (default: ``name``)."""
    return LIMITS[name].check(where or name, value)


def check_counts(options: dict) -> None:
    """Every key of ``options`` (attack settings, model options) that :data:`LIMITS` knows, within
    its range."""
    for name, value in options.items():
        if name in LIMITS:
            check_count(name, value)
