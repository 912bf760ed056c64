"""Quiet by default: Flower's telemetry, Flower's update check and Ray's usage statistics are off
in every process the library starts (the command lines, the sweep's Ray, the Flower apps of
chapter 9 and the notebooks, which import the library first).

Each switch is an environment variable, read by the process that would send the request and
inherited by every process it starts (a Ray worker, Flower's SuperLink and simulation):

* ``FLWR_TELEMETRY_ENABLED=0``: Flower posts no usage event (read once, when ``flwr`` is imported);
* ``FLWR_DISABLE_UPDATE_CHECK=1``: the ``flwr`` command and Flower's servers ask no one for a newer
  release;
* ``RAY_USAGE_STATS_ENABLED=0``: Ray reports no cluster usage (the same as
  ``ray start --disable-usage-stats``).

:func:`quiet_by_default` sets each one that is not set yet, and runs when ``soteria_lib`` is
imported: a variable someone set on purpose (``1`` to opt in) is left as it is. A Flower or Ray
process started outside the library (``flwr run``, ``ray start``) needs them in its shell; the
README's commands set them.
"""
from __future__ import annotations

import os

QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def quiet_by_default(environ=os.environ) -> dict[str, str]:
    """Set every switch of :data:`QUIET` that ``environ`` lacks; returns the switches as they stand."""
    for name, value in QUIET.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in QUIET}

