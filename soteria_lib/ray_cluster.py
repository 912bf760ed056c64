"""Reaching Ray, an optional extra (``pip install "soteria-lib[ray]"``): the sweep's Ray backend
(:mod:`soteria_lib.sweep.cluster`, chapter 5) runs on a Ray started here or on the cluster whose
head is at ``HOST:PORT``. (Flower's simulation starts a Ray of its own: :mod:`soteria_lib.flower_run`.)
Ray's usage statistics are off in every process the library starts (:mod:`soteria_lib.telemetry`).

An address is parsed here, not by Ray: ``HOST:PORT`` (``[ADDRESS]:PORT`` for IPv6) with a port in
1..65535; anything else, the empty string included, is a one-line ``ValueError`` (Ray would start a
local cluster for an empty one, and print a traceback for a missing port). Ray's own warnings
(a FutureWarning about GPU variables on every start) stay off the user's stderr unless asked for.
"""
from __future__ import annotations

import importlib
import re
import socket
import warnings
from contextlib import contextmanager
from typing import Iterator

RAY_MISSING = "the ray backend needs Ray: pip install 'soteria-lib[ray]'"
ADDRESS = re.compile(r"(?:\[(?P<ipv6>[^\]\s]+)\]|(?P<host>[^:\[\]\s/]+)):(?P<port>\d+)")


class RayMissing(RuntimeError):
    """The ray backend was asked for where Ray is not installed."""


def require_ray():
    """The ``ray`` module, or :class:`RayMissing` naming the extra to install."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise RayMissing(RAY_MISSING) from None


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a Ray head's ``HOST:PORT``, else a one-line ``ValueError``."""
    match = ADDRESS.fullmatch(address)
    if match is None:
        shown = "an empty one" if not address else repr(address)
        raise ValueError(f"a Ray address is HOST:PORT, the head's host and its `ray start --head --port`, "
                         f"got {shown}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"the port of Ray address {address!r} must be in 1..65535, got {port}")
    return match["ipv6"] or match["host"], port


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Parse ``address`` and refuse one where nothing listens, in one line (Ray itself retries for
    minutes)."""
    host, port = parse_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc}); start a head there with "
                              f"`ray start --head --port={port} --disable-usage-stats`") from None


@contextmanager
def ray_warnings(shown: bool) -> Iterator[None]:
    """Ray's FutureWarnings (its tip on GPU variables, printed at every start) hidden for the block
    unless ``shown``."""
    with warnings.catch_warnings():
        if not shown:
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
        yield
