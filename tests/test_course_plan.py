"""The course plan (book/course_plan.md): every chapter with what comes before it, a study time and
the execution time the build measured, read from book/timings.json (tools/course_plan.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from repo_tools import load_tool

ROOT = Path(__file__).resolve().parents[1]


plan = load_tool("course_plan")
PAGE = (ROOT / "book" / "course_plan.md").read_text()
GOOD = {"machine": "a 2-core test machine", "measured": "2026-12-07", "load": "idle",
        "chapters": {"notebooks/01_a.ipynb": 45.2, "notebooks/02_b.ipynb": 318}}


def _chapters_of_the_page() -> dict:
    block = re.search(r"```\{chapter-plan\}\n(.*?)\n```", PAGE, re.S).group(1)
    return yaml.safe_load(block)


def _toc_notebooks() -> list[str]:
    return [name for name in re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text())
            if name.startswith("notebooks/")]


def test_the_page_plans_every_chapter_of_the_book_in_order():
    chapters = _chapters_of_the_page()
    assert list(chapters) == _toc_notebooks()
    for docname, row in chapters.items():
        assert row["prerequisites"].strip() and re.fullmatch(r"\d+ min", row["study"]), docname


def test_the_page_has_the_three_paths():
    for path in ("A 90-minute lab", "A two-week module", "A reading course"):
        assert f"**{path}**" in PAGE


def test_the_timings_file_is_read_and_checked(tmp_path):
    path = tmp_path / "timings.json"
    path.write_text(json.dumps(GOOD))
    assert plan.load_timings(path) == GOOD
    for broken, message in [({**GOOD, "machine": ""}, "'machine' must be"),
                            ({**GOOD, "measured": "7 Dec"}, "'measured' must be a date"),
                            ({**GOOD, "chapters": {"notebooks/01_a.ipynb": -1}}, "positive number"),
                            ({**GOOD, "chapters": {}}, "'chapters' must map")]:
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message):
            plan.load_timings(path)
    with pytest.raises(ValueError, match="is missing"):
        plan.load_timings(tmp_path / "none.json")


def test_the_table_gives_each_chapter_its_measured_time_and_says_where_it_was_measured():
    rows = {"notebooks/01_a": {"prerequisites": "none", "study": "30 min"},
            "notebooks/02_b": {"prerequisites": "Chapter 1", "study": "45 min"}}
    lines = plan.plan_table(rows, GOOD)
    assert lines[2] == "| {doc}`/notebooks/01_a` | none | 30 min | 45 s |"
    assert lines[3] == "| {doc}`/notebooks/02_b` | Chapter 1 | 45 min | 5 min |"
    assert "execute in 6 min in all" in lines[-1] and "a 2-core test machine on 2026-12-07 (idle)" in lines[-1]
    with pytest.raises(ValueError, match="no execution time for notebooks/03_c"):
        plan.plan_table({**rows, "notebooks/03_c": rows["notebooks/01_a"]}, GOOD)


def test_durations_read_as_a_planner_needs_them():
    assert [plan.duration(s) for s in (7.4, 89, 91, 318, 3599, 3930)] == \
        ["7 s", "89 s", "2 min", "5 min", "1 h 00 min", "1 h 06 min"]


def test_the_committed_timings_cover_every_chapter():
    path = ROOT / plan.TIMINGS
    if not path.is_file():
        pytest.skip("book/timings.json is written by tools/timings.py from a build (issue 28, part B)")
    plan.plan_table(_chapters_of_the_page(), plan.load_timings(path))
