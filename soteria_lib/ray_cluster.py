"""Reaching Ray, an optional extra (``pip install "soteria-lib[ray]"``): the sweep's Ray backend
(:mod:`soteria_lib.sweep.cluster`, chapter 5) runs on a Ray started here or on the cluster whose
head is at ``HOST:PORT``. (Flower's simulation starts a Ray of its own: :mod:`soteria_lib.flower_run`.)
Ray's usage statistics are off in every process the library starts (:mod:`soteria_lib.telemetry`).
"""
from __future__ import annotations

import importlib
import re
import socket

RAY_MISSING = "the ray backend needs Ray: pip install 'soteria-lib[ray]'"


class RayMissing(RuntimeError):
    """The ray backend was asked for where Ray is not installed."""


def require_ray():
    """The ``ray`` module, or :class:`RayMissing` naming the extra to install."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise RayMissing(RAY_MISSING) from None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` address where nothing listens, in one line (Ray itself retries for
    minutes); other forms (``auto``, ``ray://...``) are left to Ray."""
    match = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", address)
    if match is None:
        return
    try:
        socket.create_connection((match[1], int(match[2])), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc}); start a head there with "
                              f"`ray start --head --port={match[2]} --disable-usage-stats`") from None
