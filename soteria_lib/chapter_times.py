"""How long each chapter takes to execute, from one data file that every chapter's box reads.

``book/timings.json`` holds what a build measured: the machine, the date, the load it ran under,
and the seconds each notebook took (``{"chapters": {"notebooks/01_gradient_leakage.ipynb": 53.1,
...}}``). ``tools/timings.py`` writes it from a build's execution report; each chapter's "Scale
and run time" box is drawn by :func:`run_time_box`, which reads it, so the time a chapter states
and the time that was measured cannot drift apart (``tests/test_chapter_times.py`` compares the
file with the latest build's own times).
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .book_files import book_file

TIMINGS = ("book", "timings.json")  # relative to the book's root (soteria_lib.book_files)
FIELDS = ("machine", "measured", "load", "chapters")


def load_timings(path: Path | None = None) -> dict:
    """The timings file, checked: every field present, every time a positive number of seconds."""
    path = book_file(*TIMINGS) if path is None else Path(path)
    data = json.loads(path.read_text())
    missing = [field for field in FIELDS if field not in data]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(data["measured"])):
        raise ValueError(f"{path}: measured is a date YYYY-MM-DD, got {data['measured']!r}")
    bad = {name: s for name, s in data["chapters"].items()
           if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0}
    if bad:
        raise ValueError(f"{path}: execution times are positive seconds, got {bad}")
    return data


def about(seconds: float) -> str:
    """A duration as a chapter states it: ``40 s`` (to 5 s), ``4 min`` (from two minutes on)."""
    if seconds < 120:
        return f"{max(5, 5 * round(seconds / 5))} s"
    return f"{round(seconds / 60)} min"


def chapter_time(notebook: str, timings: dict | None = None) -> float:
    """Seconds that ``notebook`` (``notebooks/01_gradient_leakage.ipynb`` or its stem) took."""
    timings = load_timings() if timings is None else timings
    key = notebook if notebook.endswith(".ipynb") else f"notebooks/{notebook}.ipynb"
    if key not in timings["chapters"]:
        raise KeyError(f"{key} has no measured time in book/timings.json: run tools/timings.py after a build")
    return float(timings["chapters"][key])


@dataclass(frozen=True)
class RunTimeBox:
    """A chapter's "Scale and run time" box: what it runs (``text``) and the measured time
    (``seconds`` None: not measured yet, as for a new chapter before the first build)."""

    text: str
    seconds: float | None
    machine: str = ""
    measured: str = ""

    def sentence(self) -> str:
        if self.seconds is None:
            return "Its execution time has not been measured yet (tools/timings.py, after a build)."
        return (f"The chapter executes in about {about(self.seconds)} ({self.seconds:.0f} s measured on "
                f"{self.machine}, {self.measured}).")

    def _repr_html_(self) -> str:
        # the theme's admonition markup, so that the box looks like the book's other notes;
        # `code` in the text becomes <code>
        body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(f"{self.text} {self.sentence()}"))
        return ('<div class="admonition note soteria-run-time"><p class="admonition-title">Scale and run time</p>'
                f"<p>{body}</p></div>")

    def __repr__(self) -> str:
        return f"Scale and run time: {self.text} {self.sentence()}"


def run_time_box(notebook: str, text: str, timings: dict | None = None) -> RunTimeBox:
    """The box of ``notebook``: ``text`` (its scale and budgets), then the time it took to execute,
    or that it was not measured yet (no file, or no entry for this chapter: the tests fail on both)."""
    text = " ".join(text.split())
    try:
        timings = load_timings() if timings is None else timings
        seconds = chapter_time(notebook, timings)
    except (FileNotFoundError, KeyError):
        return RunTimeBox(text, None)
    return RunTimeBox(text, seconds, timings["machine"], timings["measured"])
