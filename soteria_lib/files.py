"""Writing results so that a reader never sees half a file, and JSON that stays valid.

Every result file of the library (a reconstruction's or a FedAvg run's ``metrics.json`` and
figure, the sweep's summary and session log, checkpoints) is written through
:func:`write_atomic` or, for files that belong together, :func:`write_together`. No chapter
teaches it; chapters 5 and 6 read the files it writes.
"""
from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

Writer = Callable[[str], None]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def write_together(writers: dict[Path, Writer]) -> None:
    """Write a set of files that belong together, all or none: each ``write(tmp)`` fills a
    temporary file beside its destination, and only when all have succeeded are they renamed
    into place, with Ctrl-C and SIGTERM held off until the last rename. On any failure the
    temporary files are removed and no destination is touched."""
    temporary: dict[Path, str] = {}
    try:
        for path, write in writers.items():
            path = Path(path)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
            os.close(fd)
            temporary[path] = tmp
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the user's group
        with signals_deferred():
            for path in list(temporary):
                os.replace(temporary.pop(path), path)
    finally:
        for tmp in temporary.values():
            Path(tmp).unlink(missing_ok=True)


def write_atomic(path: Path, write: Writer) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place;
    on any failure (Ctrl-C included) the temporary file is removed and ``path`` is untouched."""
    write_together({Path(path): write})


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


def write_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON, atomically, non-finite numbers as ``null``."""
    write_atomic(path, json_writer(data))
