"""The sweep on Ray (``--backend ray``): the local runner's rows, resume, Ctrl-C, and clear errors.

The tests start their own Ray head on 127.0.0.1 (``ray start --head --block`` in a session of its
own) and stop it by signalling that process group; they never touch another Ray on the machine.
Where Ray is not installed they skip, saying so, except in CI (``CI`` set), which installs the
extras and must run them.
"""
import importlib
import os
import signal
import sys
from pathlib import Path

import pytest

from processes import finish, free_port, interrupt, named, run_main, start, wait_until

from soteria_lib import experiments
from soteria_lib import ray_cluster
from soteria_lib.sweep import runner
from soteria_lib.sweep.results import read_rows

if os.environ.get("CI"):
    importlib.import_module("ray")  # CI installs the extras: a missing Ray fails there
else:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'soteria-lib[ray]')")

# Three cells of one or two seeds on the embedded photograph: no dataset needed.
GRID = """
scale = "teaching"
images = [-1]
seeds = [0, 1]

[defenses]
none = true
soteria = [40]
prune = [40]

[attacks.dlg]
datasets = ["mnist"]
max_iterations = 3
"""
METRICS = ("mse", "psnr", "matching_loss", "iterations", "diverged")


def _run(grid: Path, csv: Path, *extra: str) -> int:
    return run_main(experiments.main, ["run", str(grid), "--output", str(csv), "--threads", "1",
                                       "--no_progress", *extra])


def _by_key(rows):
    return {(r["defense"], r["defense_settings"], r["seed"]): tuple(r[m] for m in METRICS) for r in rows}


def test_ray_writes_the_rows_of_the_local_runner_and_resumes(tmp_path, ray_head, monkeypatch):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert _run(grid, local, "--workers", "1") == 0
    assert _run(grid, on_ray, "--backend", "ray", "--address", ray_head) == 0
    rows = read_rows(on_ray)
    assert len(rows) == 6 and len(_by_key(rows)) == 6  # one row per run: none duplicated
    # the same runs, seeds and threads on the same machine: the same numbers, bit for bit
    assert _by_key(rows) == _by_key(read_rows(local))
    session = runner.read_sessions(on_ray)[-1]
    assert (session["backend"], session["address"], session["runs_done"]) == ("ray", ray_head, 6)

    before = on_ray.read_bytes()
    assert _run(grid, on_ray, "--backend", "ray", "--address", ray_head) == 0  # resume: nothing left
    assert on_ray.read_bytes() == before
    assert runner.read_sessions(on_ray)[-1]["runs_skipped"] == 6


def test_a_local_ray_is_started_and_stopped_when_no_address_is_given(tmp_path):
    import ray

    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.replace("seeds = [0, 1]", "seeds = [0]"))
    csv = tmp_path / "r.csv"
    assert _run(grid, csv, "--backend", "ray", "--workers", "2") == 0
    assert len(read_rows(csv)) == 3 and not ray.is_initialized()


def test_ctrl_c_stops_a_ray_sweep_keeps_its_rows_and_a_resume_completes_it(tmp_path, ray_head):
    grid = tmp_path / "many.toml"
    grid.write_text(GRID.replace("seeds = [0, 1]", "seeds = [" + ", ".join(map(str, range(30))) + "]")
                    .replace("max_iterations = 3", "max_iterations = 30"))
    csv = tmp_path / "many.csv"
    args = ("experiments", "run", str(grid), "--output", str(csv), "--threads", "1", "--no_progress",
            "--backend", "ray", "--address", ray_head)
    process = start(*args, cwd=tmp_path)
    wait_until(lambda: csv.exists() and len(read_rows(csv)) >= 1, what="a first finished row")
    interrupt(process, signal.SIGINT)
    returncode, err = finish(process)
    assert returncode == 130 and "Traceback" not in err, err
    assert "Warning" not in err, err  # Ray's FutureWarning on GPU variables, printed at every start, is kept off
    # the driver's job ended with it: the cluster stops the sweep's tasks still running
    wait_until(lambda: not named("ray::_run_on_worker"), timeout=60, what="the sweep's Ray tasks stopped")
    kept = read_rows(csv)
    assert 1 <= len(kept) < 90 and len(_by_key(kept)) == len(kept)
    assert runner.read_sessions(csv)[-1]["status"] == "interrupted"

    assert _run(grid, csv, "--backend", "ray", "--address", ray_head) == 0
    rows = read_rows(csv)
    assert len(rows) == 90 and len(_by_key(rows)) == 90  # the rest ran; nothing twice


def test_an_address_without_the_ray_backend_is_one_clear_error(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    assert _run(grid, tmp_path / "x.csv", "--address", "127.0.0.1:1") == 2
    assert capsys.readouterr().err.strip() == ("soteria-experiments run: error: --address names a Ray cluster: "
                                               "add --backend ray")


def test_a_missing_ray_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ray_cluster.RayMissing, match=r"pip install 'soteria-lib\[ray\]'"):
        ray_cluster.require_ray()


def test_an_address_where_no_head_listens_is_one_clear_error(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    port = free_port()  # nothing listens there
    assert _run(grid, tmp_path / "x.csv", "--backend", "ray", "--address", f"127.0.0.1:{port}") == 1
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]  # after the plan's "N runs to do" line, one line of error
    assert "Traceback" not in err and line.startswith(f"soteria-experiments run: error: no Ray cluster: nothing answers at 127.0.0.1:{port}")
    assert not (tmp_path / "x.csv").exists() or len(read_rows(tmp_path / "x.csv")) == 0
