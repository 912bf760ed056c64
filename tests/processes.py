"""Helpers for tests of the command lines: in this process, or in a subprocess that they signal."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def start(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """``python -m soteria_lib.<module> args`` in its own session (a signal reaches it alone)."""
    return subprocess.Popen([sys.executable, "-m", f"soteria_lib.{module}", *args], cwd=cwd,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for_output(process: subprocess.Popen, needle: str, timeout: float = 120) -> str:
    """Read the process's stderr until ``needle`` appears; returns what was read."""
    seen, deadline = b"", time.monotonic() + timeout
    while needle.encode() not in seen:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"{needle!r} never appeared; stderr so far: {seen[-500:]!r}")
        ready, _, _ = select.select([process.stderr], [], [], 0.2)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096)
    return seen.decode(errors="replace")


def wait_until(condition, timeout: float = 120, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    """The PIDs of a process's children (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
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
