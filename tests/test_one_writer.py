"""One writer per results file: a second sweep, study or summary of the same file is refused with
one line naming the process that holds it; a killed holder leaves no stale lock; and summarize
refuses a CSV that holds a run twice (or reads the first of each with --keep_first)."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from processes import finish, interrupt, run_main, start, wait_for_output
from tiny_grids import STUDY, TWO_CELLS, with_seeds

from soteria_lib import experiments
from soteria_lib.files import FileInUse, lock_path, one_writer
from soteria_lib.sweep import runner
from soteria_lib.sweep.results import read_rows, run_key

GRID = with_seeds(TWO_CELLS, 6)


def _keys(csv: Path) -> list[tuple]:
    return [run_key(row) for row in read_rows(csv)]


def test_two_sweeps_started_together_on_one_file_run_each_run_once(tmp_path):
    grid, csv = tmp_path / "grid.toml", tmp_path / "out.csv"
    grid.write_text(GRID)
    args = ("experiments", "run", str(grid), "--output", str(csv), "--workers", "1", "--no_progress")
    both = [start(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}) for _ in range(2)]
    outcomes = [finish(process) for process in both]
    codes = sorted(code for code, _ in outcomes)
    assert codes in ([0, 0], [0, 2]), outcomes
    for (code, err), other in zip(outcomes, reversed(both)):
        if code == 2:  # refused while the other held the file: one line naming its PID
            lines = err.strip().splitlines()
            assert len(lines) == 1 and f"PID {other.pid}" in lines[0] and "Traceback" not in err, err
    keys = _keys(csv)
    assert len(keys) == 12 and len(set(keys)) == 12  # every run once: none lost, none twice
    assert not lock_path(csv).exists()
    summary = tmp_path / "s.md"
    assert run_main(experiments.main, ["summarize", str(csv), "--output", str(summary)]) == 0


def _in_process(command: str, tmp_path: Path) -> tuple[list[str], Path]:
    """argv of ``command`` and the file it writes (whose lock the test holds)."""
    (tmp_path / "grid.toml").write_text(GRID)
    (tmp_path / "study.toml").write_text(STUDY)
    if command == "summarize":
        csv = tmp_path / "done.csv"
        assert experiments.main(["run", str(tmp_path / "grid.toml"), "--output", str(csv), "--no_progress"]) == 0
        return ["summarize", str(csv), "--output", str(tmp_path / "s.md")], tmp_path / "s.md"
    source = "grid.toml" if command == "run" else "study.toml"
    return [command, str(tmp_path / source), "--output", str(tmp_path / "out.csv"), "--no_progress"], \
        tmp_path / "out.csv"


@pytest.mark.parametrize("command", ["run", "study", "summarize"])
def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys, command):
    argv, written = _in_process(command, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    with one_writer(written):  # this process holds the file, as a running sweep would
        assert run_main(experiments.main, argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"PID {os.getpid()}" in lines[0] and str(written) in lines[0], lines
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, lock_path(written).name])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, the lock file gone
    assert run_main(experiments.main, argv) == 0  # once released, the file is free


@pytest.mark.parametrize("left", ["empty", "a killed holder's PID"])
def test_a_writer_refused_between_the_holders_lock_and_its_pid_still_names_the_pid(tmp_path, left):
    """The race CI met: the holder has taken the lock but not yet written its PID; the file is
    empty, or still names the killed holder that left it behind."""
    csv = tmp_path / "out.csv"
    if left != "empty":
        dead = subprocess.Popen([sys.executable, "-c", ""])
        dead.wait(timeout=60)
        lock_path(csv).write_text(f"{dead.pid}\n")
    fd = os.open(lock_path(csv), os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, its PID not written yet
    late = threading.Timer(0.2, lambda: (os.ftruncate(fd, 0), os.pwrite(fd, b"%d\n" % os.getpid(), 0)))
    late.start()
    try:
        with pytest.raises(FileInUse, match=f"PID {os.getpid()},"):
            with one_writer(csv):
                pass
    finally:
        late.join()
        os.close(fd)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    csv = tmp_path / "out.csv"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from soteria_lib.files import one_writer\n"
                               f"with one_writer({str(csv)!r}):\n"
                               "    print('held', flush=True, file=sys.stderr)\n"
                               "    time.sleep(600)\n"], stderr=subprocess.PIPE, start_new_session=True)
    wait_for_output(holder, "held")
    with pytest.raises(FileInUse, match=f"PID {holder.pid}"):
        with one_writer(csv):
            pass
    interrupt(holder, signal.SIGKILL)
    holder.wait(timeout=30)
    assert lock_path(csv).exists()  # killed: its lock file stays, but the kernel released the lock
    with one_writer(csv):
        assert lock_path(csv).read_text() == f"{os.getpid()}\n"
    assert not lock_path(csv).exists()


def _duplicated(tmp_path: Path) -> Path:
    (tmp_path / "grid.toml").write_text(GRID)
    csv = tmp_path / "r.csv"
    assert experiments.main(["run", str(tmp_path / "grid.toml"), "--output", str(csv), "--no_progress"]) == 0
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines + lines[1:4]))  # three runs written twice, as by two unlocked sweeps
    return csv


def test_summarize_refuses_a_csv_with_duplicate_runs_naming_them(tmp_path, capsys):
    csv = _duplicated(tmp_path)
    capsys.readouterr()
    assert run_main(experiments.main, ["summarize", str(csv), "--output", str(tmp_path / "s.md")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "holds 3 runs more than once" in lines[0] and "--keep_first" in lines[0], lines
    assert "on lines 2, 14" in lines[0] and "seed=" in lines[0], lines  # the first, and where it is repeated
    assert not (tmp_path / "s.md").exists()


def test_keep_first_reads_each_run_once(tmp_path):
    csv = _duplicated(tmp_path)
    clean = tmp_path / "clean.csv"
    clean.write_text("".join(csv.read_text().splitlines(keepends=True)[:13]))
    outputs = {}
    for name, source, flags in (("dup", csv, ["--keep_first"]), ("clean", clean, [])):
        outputs[name] = tmp_path / f"{name}.md"
        assert run_main(experiments.main, ["summarize", str(source), "--output", str(outputs[name]), *flags]) == 0
    groups = {name: json.loads(path.with_suffix(".json").read_text())["groups"] for name, path in outputs.items()}
    runs = {name: [(cell["label"], cell["attacker"], cell["runs"]) for group in found for cell in group["cells"]]
            for name, found in groups.items()}
    assert runs["dup"] == runs["clean"]  # each run counted once
    assert sum(n for _, attacker, n in runs["clean"] if attacker == "plain") == 12


def test_a_ctrl_c_right_after_the_plan_leaves_an_interrupted_session(tmp_path):
    grid, csv = tmp_path / "grid.toml", tmp_path / "out.csv"
    grid.write_text(GRID.replace("max_iterations = 2", "max_iterations = 100000"))
    process = start("experiments", "run", str(grid), "--output", str(csv), "--no_progress", cwd=tmp_path)
    wait_for_output(process, "runs to do")
    interrupt(process)
    code, err = finish(process)
    assert code == 130 and "Traceback" not in err, err
    assert runner.read_sessions(csv)[-1]["status"] == "interrupted" and not lock_path(csv).exists()
