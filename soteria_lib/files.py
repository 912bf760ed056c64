"""Writing results so that a reader never sees half a file, and JSON that stays valid.

Every result file of the library (a reconstruction's or a FedAvg run's ``metrics.json``, the
sweep's summary and session log, checkpoints, figures) is written through :func:`write_atomic`.
No chapter teaches it; chapters 5 and 6 read the files it writes.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place;
    on any failure (Ctrl-C included) the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(value):
    """``value`` with every non-finite float replaced by ``None`` (JSON has no inf or NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON, atomically, non-finite numbers as ``null``."""
    text = json.dumps(json_safe(data), indent=2) + "\n"
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))
