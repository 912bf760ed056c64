"""Sphinx extension (listed in _config.yml): the chapter table of the course plan (book/course_plan.md),
whose execution times are read from the one file that holds them, ``book/timings.json``.

That file is written from a build by tools/timings.py, in the form

    {"machine": "...", "measured": "YYYY-MM-DD", "load": "...",
     "chapters": {"notebooks/01_gradient_leakage.ipynb": seconds, ...}}

The directive ``chapter-plan`` takes, as YAML, one entry per chapter (its docname, what to know
before it, and how long studying it takes) and renders the table with the measured execution time
of each chapter and a sentence saying where and when they were measured. A chapter missing from
the file, or a file that breaks the form, fails the build with one line saying which.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

TIMINGS = Path("book") / "timings.json"  # relative to the book's root


def load_timings(path: Path) -> dict:
    """The timings file, checked against its form; raises ValueError naming what is wrong."""
    try:
        timings = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: tools/timings.py writes it from a build") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    for key in ("machine", "measured", "load"):
        if not isinstance(timings.get(key), str) or not timings[key].strip():
            raise ValueError(f"{path}: {key!r} must be a non-empty string")
    try:
        datetime.date.fromisoformat(timings["measured"])
    except ValueError:
        raise ValueError(f"{path}: 'measured' must be a date YYYY-MM-DD, got {timings['measured']!r}") from None
    chapters = timings.get("chapters")
    if not isinstance(chapters, dict) or not chapters:
        raise ValueError(f"{path}: 'chapters' must map notebooks to seconds")
    for notebook, seconds in chapters.items():
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"{path}: the time of {notebook} must be a positive number of seconds")
    return timings


def duration(seconds: float) -> str:
    """``45 s``, ``4 min``, ``1 h 05 min``: how a reader plans with it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def plan_table(chapters: dict, timings: dict) -> list[str]:
    """The course plan's table, as MyST Markdown lines: one row per chapter of ``chapters``
    (``{docname: {"prerequisites": ..., "study": ...}}``), its execution time from ``timings``."""
    measured = timings["chapters"]
    missing = [docname for docname in chapters if f"{docname}.ipynb" not in measured]
    if missing:
        raise ValueError(f"{TIMINGS} has no execution time for {', '.join(missing)}")
    lines = ["| Chapter | Before it | Study time | Executes in |", "| --- | --- | --- | --- |"]
    for docname, row in chapters.items():
        lines.append(f"| {{doc}}`/{docname}` | {row['prerequisites']} | {row['study']} | "
                     f"{duration(measured[f'{docname}.ipynb'])} |")
    total = sum(measured[f"{docname}.ipynb"] for docname in chapters)
    lines += ["", f"All {len(chapters)} chapters execute in {duration(total)} in all. Execution times were "
              f"measured on {timings['machine']} on {timings['measured']} ({timings['load']}), by the "
              "book's build, which runs every chapter from a fresh kernel; study times are our estimates "
              "for a student who runs the cells and does the exercises."]
    return lines


def _directive():
    import yaml
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class ChapterPlan(SphinxDirective):
        has_content = True

        def run(self):
            path = Path(self.env.srcdir) / TIMINGS
            self.env.note_dependency(str(path))
            try:
                lines = plan_table(yaml.safe_load("\n".join(self.content)), load_timings(path))
            except ValueError as error:
                raise self.error(str(error)) from None
            box = nodes.container(classes=["soteria-chapter-plan"])
            self.state.nested_parse(StringList(lines, source=str(path)), self.content_offset, box)
            return [box]

    return ChapterPlan


def setup(app):
    app.add_directive("chapter-plan", _directive())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
