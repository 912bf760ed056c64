"""Writing results so that a reader never sees half a file, JSON that stays valid, and one writer
per results file.

Every result file of the library (a reconstruction's or a FedAvg run's ``metrics.json`` and
figure, the sweep's summary and session log, checkpoints) is written through
:func:`write_atomic` or, for files that belong together, :func:`write_together`; rows are added
to a results file with :func:`append_whole`, and a sweep holds :func:`one_writer` on its file.
A write that the file system refuses (a full disk, a name too long, a read-only folder) raises
:class:`WriteFailed`, one line naming the file and the reason, and leaves nothing behind: no
temporary file, no part of a row, no folder that the failed write created. No chapter teaches
it; chapters 5 and 6 read the files it writes.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

Writer = Callable[[str], None]


class WriteFailed(OSError):
    """A file could not be written: the message is one line naming the file and the reason."""


class FileInUse(ValueError):
    """Another process holds the one-writer lock of a results file; the message names its PID."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refused(path: Path, exc: OSError) -> WriteFailed:
    """The one-line :class:`WriteFailed` for ``path`` and what the file system said."""
    return WriteFailed(f"cannot write {path}: {exc.strerror or exc}")


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block has run, then act on them as usual. Outside the
    main thread (where Python cannot set handlers) the block simply runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: pending.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those it created, outermost first."""
    missing, probe = [], Path(folder)
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made meanwhile by another process: theirs, not ours to remove
            continue
        created.append(path)
    return created


def remove_folders(created: list[Path]) -> None:
    """Remove the folders :func:`make_folders` created, innermost first, where they are still empty."""
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:  # something was written there: keep it
            return


def write_together(writers: dict[Path, Writer]) -> None:
    """Write a set of files that belong together, all or none: each ``write(tmp)`` fills a
    temporary file beside its destination (folders are created as needed), and only when all have
    succeeded are they renamed into place, with Ctrl-C and SIGTERM held off until the last rename.
    On any failure the temporary files and the folders created here are removed, no destination
    is touched, and a refusal of the file system is a :class:`WriteFailed` naming the file."""
    temporary: dict[Path, str] = {}
    created: list[Path] = []
    finished = False
    try:
        for path, write in writers.items():
            path = Path(path)
            try:
                created += make_folders(path.parent)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:32]}.", suffix=path.suffix[:16])
                os.close(fd)
                temporary[path] = tmp
                write(tmp)
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the user's group
            except OSError as exc:
                raise refused(path, exc) from None
        with signals_deferred():
            for path in list(temporary):
                try:
                    os.replace(temporary[path], path)
                except OSError as exc:
                    raise refused(path, exc) from None
                del temporary[path]
        finished = True
    finally:
        for tmp in temporary.values():
            Path(tmp).unlink(missing_ok=True)
        if not finished:
            remove_folders(created)


def write_atomic(path: Path, write: Writer) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place;
    on any failure (Ctrl-C included) the temporary file is removed and ``path`` is untouched."""
    write_together({Path(path): write})


def append_whole(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created if missing) in one piece and force it to disk, with
    Ctrl-C and SIGTERM held off until it is. If the disk fills on the way, the file is cut back
    to its former length: it never keeps part of ``text``, and the refusal is a
    :class:`WriteFailed` naming the file."""
    with signals_deferred():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise refused(path, exc) from None
        try:
            size = os.fstat(fd).st_size
            data = memoryview(text.encode())
            try:
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)
                raise
        except OSError as exc:
            raise refused(path, exc) from None
        finally:
            os.close(fd)


def lock_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".lock")


def _alive(text: str) -> bool:
    """Whether ``text`` is the PID of a running process."""
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # running, as another user
        return True
    return True


def _holder(fd: int, patience: float = 2.0) -> str:
    """The PID written in a lock file that another process holds. The holder writes it just after
    taking the lock, so until then the file is empty or still names a killed holder's PID: it is
    read again for up to ``patience`` seconds, until it names a running process."""
    deadline = time.monotonic() + patience
    while True:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if _alive(holder) or time.monotonic() > deadline:
            return holder or "unknown"
        time.sleep(0.01)


def _acquire(lock: Path, path: Path, what: str) -> int:
    """An open descriptor of ``lock``, exclusively flocked, holding this process's PID."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FileInUse(f"{what} {path} is being written by another process (PID {holder}, which holds "
                            f"{lock}); wait for it to finish or stop it") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:  # its last holder removed it after we opened it
            pass
        os.close(fd)  # a lock file that is no longer at its path: take the one there now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        os.close(fd)
        raise
    return fd


@contextmanager
def one_writer(path: Path, what: str = "results file") -> Iterator[None]:
    """Hold the one-writer lock of ``path`` for the block: an advisory ``flock`` on
    ``<path>.lock`` beside it, which holds the writer's PID. The kernel releases the lock when
    the process ends, however it ends, so a killed writer never leaves it stale. A second writer
    gets :class:`FileInUse`, one line naming the PID that holds it. The lock file is removed at
    the end (a killed writer leaves it behind, unlocked)."""
    lock = lock_path(path)
    created: list[Path] = []
    try:
        created = make_folders(lock.parent)
        fd = _acquire(lock, path, what)
    except FileInUse:
        remove_folders(created)
        raise
    except OSError as exc:
        remove_folders(created)
        raise refused(lock, exc) from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before the lock is released: an opener waiting on it sees it gone
        os.close(fd)
        remove_folders(created)


def json_safe(value):
    """``value`` with every non-finite float replaced by ``None`` (JSON has no inf or NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_writer(data) -> Writer:
    """A writer of ``data`` as indented JSON, non-finite numbers as ``null``."""
    text = json.dumps(json_safe(data), indent=2) + "\n"
    return lambda tmp: Path(tmp).write_text(text)


def text_writer(text: str) -> Writer:
    """A writer of ``text`` as it is."""
    return lambda tmp: Path(tmp).write_text(text)


def write_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON, atomically, non-finite numbers as ``null``."""
    write_atomic(path, json_writer(data))
