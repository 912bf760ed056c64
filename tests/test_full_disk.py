"""A full disk and paths the file system refuses, on every write of every command line: one line
naming the file and the reason, exit 1 when the disk fills during a run and 2 when an output
cannot be written before any work, nothing half-written, no folder left behind.

The disk is a small tmpfs mounted inside the test (we run as root here and in CI). Where mounting
is not permitted the tests skip, saying so, except where ``CI`` or ``SOTERIA_TMPFS_REQUIRED`` is
set: there they must run. A disk that fills *during* a run is made deterministic by filling it
just before the file under test is written (the moment its temporary file is created).
"""
import errno
import os
import subprocess
import tempfile
import types
from pathlib import Path

import pytest
from processes import run_main
from tiny_grids import STUDY, TWO_CELLS, with_seeds

from soteria_lib import experiments, fedavg, files, reconstruct
from soteria_lib.sweep import results, runner
from soteria_lib.sweep.budget_study import STUDY_TABLE
from soteria_lib.sweep.results import read_rows

# ROWS has ten runs a cell, whose rows fill more than a page of the CSV (tmpfs allocates space a
# page at a time).
GRID = TWO_CELLS
ROWS = with_seeds(GRID, 10).replace("max_iterations = 2", "max_iterations = 1")
NO_SPACE = os.strerror(errno.ENOSPC)


class Disk:
    """A tmpfs of ``size`` at ``root``; :meth:`fill` takes every free byte, :meth:`fill_before`
    does so when a given file is about to be written."""

    def __init__(self, root: Path):
        self.root = root

    def fill(self) -> None:
        with open(self.root / "filler", "ab", buffering=0) as f:
            for chunk in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

    def fill_before(self, monkeypatch, name: str) -> None:
        """Fill the disk when the temporary file of ``name`` is created (files.write_together)."""
        real, stem, extension = tempfile.mkstemp, Path(name).stem, Path(name).suffix

        def mkstemp(dir=None, prefix="", suffix=""):
            if (prefix, suffix) == (f".{stem[:32]}.", extension):
                self.fill()
            return real(dir=dir, prefix=prefix, suffix=suffix)

        monkeypatch.setattr(files, "tempfile", types.SimpleNamespace(mkstemp=mkstemp))

    def contents(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.name != "filler")


@pytest.fixture
def disk(tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        reason = (f"cannot mount a tmpfs here ({mount.stderr.strip() or mount.returncode}); the full-disk tests "
                  "need root")
        if os.environ.get("CI") or os.environ.get("SOTERIA_TMPFS_REQUIRED"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield Disk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def _sweep_lines(capsys) -> str:
    """The error line of a sweep (after its "N runs to do" line)."""
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if "runs to do" not in line]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def _filling_at_a_new_page(disk: Disk, append):
    """``append`` that fills the disk before the first row that needs a new page of the file: that
    row is cut short by the full disk halfway (tmpfs gives space a page at a time)."""
    page = os.sysconf("SC_PAGESIZE")

    def filling(path, text):
        size = Path(path).stat().st_size
        if size // page != (size + len(text.encode())) // page:
            disk.fill()
        append(path, text)
    return filling


# (command, its flags, the file whose write finds the disk full). The command's output goes to
# the tmpfs; every file of every command line is in the table.
RECONSTRUCT = ["--attack=dlg", "--target_id=-1", "--max_iterations=2", "--save_image", "--no_progress"]
DURING_A_RUN = [
    ("reconstruct", RECONSTRUCT, "reconstruction.png"),
    ("reconstruct", RECONSTRUCT, "metrics.json"),
    ("fedavg", ["--rounds=1", "--clients=2", "--fraction=0.5", "--no_progress"], "checkpoint.pt"),
    ("fedavg", ["--rounds=1", "--clients=2", "--fraction=0.5", "--no_progress"], "accuracy.png"),
    ("fedavg", ["--rounds=1", "--clients=2", "--fraction=0.5", "--no_progress"], "metrics.json"),
    ("run", [], "sweep.sessions.json"),
    ("run", ["rows"], "row"),
    ("study", [], "sweep.md"),
    ("study", [], "sweep.png"),
    ("summarize", [], "summary.md"),
    ("summarize", [], "summary.json"),
    ("summarize", [], "summary_mse_vs_rate.png"),
]


@pytest.fixture(scope="module")
def done_csv(tmp_path_factory) -> Path:
    """A finished sweep's rows, on the ordinary disk: what summarize reads."""
    folder = tmp_path_factory.mktemp("done")
    (folder / "grid.toml").write_text(GRID)
    csv = folder / "done.csv"
    assert experiments.main(["run", str(folder / "grid.toml"), "--output", str(csv), "--no_progress"]) == 0
    return csv


def _command(name: str, flags: list[str], place: Path, tmp_path: Path, data_root, done: Path | None) -> tuple:
    """``(main, argv)`` of a command whose output goes to ``place``."""
    if name == "reconstruct":
        return reconstruct.main, [*flags, f"--output={place / 'run'}"]
    if name == "fedavg":
        return fedavg.main, [*flags, f"--data_root={data_root}", f"--output={place / 'run'}"]
    if name == "run":
        (tmp_path / "grid.toml").write_text(ROWS if flags == ["rows"] else GRID)
        return experiments.main, ["run", str(tmp_path / "grid.toml"), "--output", str(place / "sweep.csv"),
                                  "--no_progress"]
    if name == "study":
        (tmp_path / "study.toml").write_text(STUDY)
        return experiments.main, ["study", str(tmp_path / "study.toml"), "--output", str(place / "sweep.csv"),
                                  "--no_progress"]
    return experiments.main, ["summarize", str(done), "--fedavg", str(tmp_path / "none"),
                              "--output", str(place / "summary.md")]


@pytest.mark.parametrize("name, flags, target", DURING_A_RUN, ids=[f"{c[0]}-{c[2]}" for c in DURING_A_RUN])
def test_a_disk_that_fills_during_a_run_is_one_line_and_exit_1(disk, tmp_path, monkeypatch, capsys, request, name,
                                                               flags, target):
    data_root = request.getfixturevalue("data_root") if name == "fedavg" else None
    done = request.getfixturevalue("done_csv") if name == "summarize" else None
    main, argv = _command(name, flags, disk.root, tmp_path, data_root, done)
    capsys.readouterr()
    if target == "row":  # a results row: appended, not renamed into place
        monkeypatch.setattr(results, "append_whole", _filling_at_a_new_page(disk, results.append_whole))
    else:
        disk.fill_before(monkeypatch, target)
    assert run_main(main, argv) == 1
    line = _sweep_lines(capsys) if name in ("run", "study") else _one_line(capsys)
    shown = "sweep.csv" if target == "row" else target
    assert f"{shown}: {NO_SPACE}" in line, line
    left = disk.contents()
    assert not [p for p in left if Path(p).name.startswith(".")], left  # no temporary file
    if name == "reconstruct":
        assert left == []  # neither file, nor the output folder the run would have made
    elif name == "fedavg":  # the round that finished is kept, unless its checkpoint was the write refused
        assert left == ([] if target == "checkpoint.pt" else ["run", "run/checkpoint.pt"])
    elif name == "summarize":
        assert left == []  # the summary, its JSON and figures appear together or not at all
    else:  # a sweep keeps its complete rows and says how its session ended
        text = (disk.root / "sweep.csv").read_text()
        rows = (read_rows if name == "run" else STUDY_TABLE.read_rows)(disk.root / "sweep.csv")
        assert text.endswith("\n") and len(text.splitlines()) == 1 + len(rows)
        if target == "row":  # the rows that fitted in the file's first page, and no part of the next
            assert 1 <= len(rows) < 20 and len(text) < os.sysconf("SC_PAGESIZE")
        if target not in ("sweep.sessions.json", "row"):  # the log was written before the disk filled
            assert runner.read_sessions(disk.root / "sweep.csv")[-1]["status"] == "complete"
        assert not (disk.root / "sweep.md").exists() and not (disk.root / "sweep.png").exists()


@pytest.mark.parametrize("name", ["reconstruct", "fedavg", "run", "study", "summarize"])
def test_a_disk_already_full_is_refused_before_any_work(disk, tmp_path, capsys, request, name, monkeypatch):
    data_root = request.getfixturevalue("data_root") if name == "fedavg" else None
    done = request.getfixturevalue("done_csv") if name == "summarize" else None
    flags = {"reconstruct": RECONSTRUCT, "fedavg": DURING_A_RUN[2][1]}.get(name, [])
    main, argv = _command(name, flags, disk.root, tmp_path, data_root, done)
    capsys.readouterr()
    disk.fill()
    started = []
    monkeypatch.setattr(experiments, "execute", lambda *args, **kwargs: started.append(1))
    assert run_main(main, argv) == 2
    line = _one_line(capsys)
    assert "not writable" in line and NO_SPACE in line and str(disk.root) in line, line
    assert disk.contents() == [] and not started


@pytest.mark.parametrize("name", ["run", "study"])
def test_a_csv_header_the_disk_refuses_is_exit_2_before_any_run(disk, tmp_path, monkeypatch, capsys, name):
    """The header is written when the sweep is planned, after the checks and before any run."""
    main, argv = _command(name, [], disk.root, tmp_path, None, None)
    disk.fill_before(monkeypatch, "sweep.csv")
    started = []
    monkeypatch.setattr(experiments, "execute", lambda *args, **kwargs: started.append(1))
    assert run_main(main, argv) == 2
    assert f"sweep.csv: {NO_SPACE}" in _one_line(capsys)
    assert disk.contents() == [] and not started


LONG_NAME = "x" * 300  # one path component longer than any Linux file system takes (255 bytes)


@pytest.mark.parametrize("argv", [
    ["reconstruct", "--output", f"out/{LONG_NAME}"],
    ["reconstruct", "--save_image", "--image_path", f"{LONG_NAME}/images"],
    ["fedavg", "--output", LONG_NAME],
    ["run", "--output", f"{LONG_NAME}/x.csv"],
    ["run", "--output", f"{LONG_NAME}.csv"],
    ["study", "--output", f"{LONG_NAME}.csv"],
    ["summarize", "--output", f"{LONG_NAME}/s.md"],
])
def test_a_name_the_file_system_refuses_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.toml").write_text(GRID)
    (tmp_path / "study.toml").write_text(STUDY)
    csv = tmp_path / "r.csv"
    results.prepare(csv)
    commands = {"reconstruct": (reconstruct.main, ["--attack=dlg", "--no_progress"]),
                "fedavg": (fedavg.main, ["--no_progress"]),
                "run": (experiments.main, ["run", "grid.toml", "--no_progress"]),
                "study": (experiments.main, ["study", "study.toml", "--no_progress"]),
                "summarize": (experiments.main, ["summarize", str(csv)])}
    main, first = commands[argv[0]]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_main(main, [*first, *argv[1:]]) == 2
    line = _one_line(capsys)
    assert "File name too long" in line and LONG_NAME in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_refused_write_names_its_file_and_leaves_no_folder(tmp_path):
    """The library's writer alone: a refusal is one WriteFailed line; the folders it made are gone."""
    target = tmp_path / "a" / "b" / "m.json"

    def refuse(tmp):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    with pytest.raises(files.WriteFailed, match=rf"cannot write {target}: Read-only file system$"):
        files.write_together({tmp_path / "a" / "ok.json": files.json_writer({}), target: refuse})
    assert list(tmp_path.iterdir()) == []
