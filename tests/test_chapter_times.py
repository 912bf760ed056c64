"""Every chapter states the execution time that was measured (book/timings.json), and that file
agrees with the latest build (tools/timings.py writes it from the build's own record)."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

from soteria_lib.chapter_times import about, chapter_time, load_timings, run_time_box

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FACTOR = 1.5  # how far a stated time may be from the build's own, either way


def _tool():
    spec = importlib.util.spec_from_file_location("timings", ROOT / "tools" / "timings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timings(tmp_path, **changes):
    data = {"machine": "2 CPU cores (test)", "measured": "2026-01-31", "load": "idle",
            "chapters": {"notebooks/01_gradient_leakage.ipynb": 53.2}, **changes}
    path = tmp_path / "timings.json"
    path.write_text(json.dumps(data))
    return path


def test_the_committed_file_has_a_time_for_every_chapter_of_the_book():
    timings = load_timings(ROOT / "book" / "timings.json")
    assert set(timings["chapters"]) == {f"notebooks/{p.name}" for p in NOTEBOOKS}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_draws_its_box_from_the_timings_file(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells)
    boxes = [c for c in cells if c["cell_type"] == "code" and "run_time_box(" in "".join(c["source"])]
    assert len(boxes) == 1 and f'run_time_box("{notebook.stem}",' in "".join(boxes[0]["source"])
    assert "remove-input" in boxes[0]["metadata"].get("tags", [])
    assert not re.search(r"executes in about \d", text), "a time written by hand drifts from what was measured"


def test_the_box_states_the_measured_time_the_machine_and_the_date(tmp_path):
    box = run_time_box("01_gradient_leakage", "Teaching  scale:\n `SOTERIA_SCALE=paper`.",
                       load_timings(_timings(tmp_path)))
    assert repr(box) == ("Scale and run time: Teaching scale: `SOTERIA_SCALE=paper`. The chapter executes in about "
                         "55 s (53 s measured on 2 CPU cores (test), 2026-01-31).")
    html = box._repr_html_()
    assert '<div class="admonition note' in html and "<code>SOTERIA_SCALE=paper</code>" in html
    assert "about 55 s" in html


@pytest.mark.parametrize("seconds, said", [(3, "5 s"), (53.2, "55 s"), (119, "120 s"), (130, "2 min"), (993, "17 min")])
def test_durations_are_rounded_as_a_reader_says_them(seconds, said):
    assert about(seconds) == said


@pytest.mark.parametrize("change, message", [
    ({"measured": "last week"}, "YYYY-MM-DD"),
    ({"chapters": {"notebooks/01_gradient_leakage.ipynb": 0}}, "positive seconds"),
    ({"chapters": {"notebooks/01_gradient_leakage.ipynb": "53"}}, "positive seconds"),
])
def test_a_malformed_timings_file_is_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_timings(_timings(tmp_path, **change))


def test_a_timings_file_without_a_field_is_refused(tmp_path):
    path = _timings(tmp_path)
    data = json.loads(path.read_text())
    del data["load"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lacks load"):
        load_timings(path)


def test_a_chapter_without_a_measured_time_is_named(tmp_path):
    with pytest.raises(KeyError, match="notebooks/02_dlg_attack.ipynb has no measured time"):
        chapter_time("02_dlg_attack", load_timings(_timings(tmp_path)))


def test_a_box_without_a_measured_time_says_so_instead_of_a_number(tmp_path):
    box = run_time_box("02_dlg_attack", "Teaching scale.", load_timings(_timings(tmp_path)))
    assert box.seconds is None and "has not been measured yet" in repr(box)
    assert not re.search(r"\d+ s", repr(box))


def test_the_tool_refuses_to_write_without_a_build(tmp_path, monkeypatch, capsys):
    tool = _tool()
    monkeypatch.setattr(tool, "ENVIRONMENT", tmp_path / "missing" / "environment.pickle")
    assert tool.main(["--load", "idle", "--output", str(tmp_path / "t.json")]) == 2
    assert "no build" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_each_chapter_states_a_time_within_a_factor_of_the_latest_build():
    """On the build's own machine: book/timings.json against what the build in _build/ logged."""
    tool = _tool()
    try:
        built = tool.build_times()["chapters"]
    except FileNotFoundError as error:
        pytest.skip(f"{error}: no execution times to compare with")
    timings = load_timings(ROOT / "book" / "timings.json")
    if timings["machine"] != tool.this_machine():
        pytest.skip(f"the stated times were measured on {timings['machine']}, this is {tool.this_machine()}")
    stated = timings["chapters"]
    off = {name: (stated[name], seconds) for name, seconds in built.items()
           if name in stated and not stated[name] / FACTOR <= seconds <= stated[name] * FACTOR}
    assert not off, (f"stated against built seconds, beyond a factor {FACTOR}: {off}; after a quiet build, "
                     "run tools/timings.py --load ...")


def _fake_build(tmp_path, runs):
    """An environment pickle holding myst-nb's execution records, as a build leaves it."""
    import pickle
    from types import SimpleNamespace

    path = tmp_path / "environment.pickle"
    path.write_bytes(pickle.dumps(SimpleNamespace(nb_metadata=runs)))
    return path


def test_the_tool_copies_the_build_record_with_the_machine_and_the_load(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "ENVIRONMENT", _fake_build(tmp_path, {
        "notebooks/01_gradient_leakage": {"exec_data": {"runtime": 53.24, "mtime": 1769860800.0, "succeeded": True}},
        "book/intro": {}}))
    output = tmp_path / "timings.json"
    assert tool.main(["--load", "nothing else running", "--machine", "2 cores", "--output", str(output)]) == 0
    written = load_timings(output)
    assert written["chapters"] == {"notebooks/01_gradient_leakage.ipynb": 53.2}
    assert (written["machine"], written["load"]) == ("2 cores", "nothing else running")
    assert re.fullmatch(r"2026-01-(30|31)|2026-02-01", written["measured"])  # the build's date, in local time


def test_the_tool_refuses_a_build_in_which_a_notebook_failed(tmp_path, monkeypatch, capsys):
    tool = _tool()
    monkeypatch.setattr(tool, "ENVIRONMENT", _fake_build(tmp_path, {
        "notebooks/01_gradient_leakage": {"exec_data": {"runtime": 5.0, "mtime": 1769860800.0, "succeeded": False}}}))
    assert tool.main(["--load", "idle", "--output", str(tmp_path / "t.json")]) == 2
    assert "failed" in capsys.readouterr().err
