"""Helpers for tests of the command lines: in this process, or in a subprocess that they signal.

The waits wait for an event (a line, a file, a state in /proc), never for a time; their timeouts
(``WAIT``) only end a test that would otherwise hang, and are long because a shared machine can
be loaded many times over (a FedAvg round of the tests took 85 s at a load average of 17 on 2 cores).
"""
from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

WAIT = 900  # seconds


def start(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """``python -m soteria_lib.<module> args`` in its own session (a signal reaches it alone)."""
    return subprocess.Popen([sys.executable, "-m", f"soteria_lib.{module}", *args], cwd=cwd,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for_output(process: subprocess.Popen, needle: str, timeout: float = WAIT) -> str:
    """Read the process's stderr until ``needle`` appears; returns what was read."""
    return wait_for_match(process, re.escape(needle), timeout)


def wait_for_match(process: subprocess.Popen, pattern: str, timeout: float = WAIT) -> str:
    """Read the process's stderr until the regular expression ``pattern`` matches; returns what was read."""
    seen, deadline = "", time.monotonic() + timeout
    while re.search(pattern, seen) is None:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"{pattern!r} never appeared; stderr so far: {seen[-500:]!r}")
        ready, _, _ = select.select([process.stderr], [], [], 0.2)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096).decode(errors="replace")
    return seen


def wait_for_step(process: subprocess.Popen, bar: str, timeout: float = WAIT) -> str:
    """Wait until the progress bar ``bar`` (tqdm's ``desc``) shows a finished step: its count is at
    least 1. Its mere appearance is not enough: the loop it counts may not have started yet."""
    return wait_for_match(process, rf"{re.escape(bar)}:[^\r\n]*\|\s*[1-9][0-9]*/", timeout)


def _signal_mask(pid: int, field: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith(f"{field}:"))


def handlers_installed(pid: int) -> bool:
    """True once ``pid`` ignores SIGINT (Linux /proc): a sweep's worker sets that in its initialiser,
    together with the signal it receives when its parent dies."""
    return bool(_signal_mask(pid, "SigIgn") & (1 << (signal.SIGINT - 1)))


def catches(pid: int, sig: int) -> bool:
    """True once ``pid`` has a handler of its own for ``sig`` (Linux /proc). Python catches SIGINT
    from its start, but SIGTERM only where the program asks."""
    return bool(_signal_mask(pid, "SigCgt") & (1 << (sig - 1)))


def wait_until(condition, timeout: float = WAIT, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    """The PIDs of a process's children (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def spawned_workers(pid: int) -> list[int]:
    """The children of ``pid`` that are multiprocessing's spawned workers (not its resource tracker)."""
    found = []
    for child in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def named(title: str) -> list[int]:
    """The processes whose command line starts with ``title`` (Ray names its workers by the task
    they run, e.g. ``ray::_run_on_worker``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(title.encode()):
                pids.append(int(entry.name))
        except OSError:  # ended meanwhile
            continue
    return pids


def finish(process: subprocess.Popen, timeout: float = WAIT) -> tuple[int, str]:
    """Wait for the process; its exit code and the rest of its stderr."""
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err.decode(errors="replace")


def run_main(main, argv: list[str]) -> int:
    """A command line's ``main`` in this process; argparse's own errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def interrupt(process: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    os.kill(process.pid, sig)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def reachable(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
