"""The sweep's command line: running, resuming, FedAvg cells, and bad grids (exit 2, one line)."""
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from processes import (alive, children, finish, handlers_installed, interrupt, run_main, spawned_workers, start,
                       wait_until)
from tiny_grids import TWO_CELLS

from soteria_lib import experiments
from soteria_lib.sweep import runner
from soteria_lib.sweep.grid import ReconstructionSpec
from soteria_lib.sweep.results import prepare, read_rows



def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_two_cell_grid_runs_end_to_end_then_resumes_without_running(tmp_path, monkeypatch):
    grid, csv = _write(tmp_path / "two.toml", TWO_CELLS), tmp_path / "out" / "two.csv"
    assert experiments.main(["run", str(grid), "--output", str(csv), "--workers", "2", "--no_progress"]) == 0
    rows = read_rows(csv)
    assert sorted((r["defense"], r["defense_settings"]) for r in rows) == [("none", "{}"),
                                                                           ("soteria", '{"pruning_rate":40.0}')]
    for row in rows:
        assert row["attack"] == "dlg" and row["dataset"] == "mnist" and row["iterations"] == 2
        assert row["model_seed"] == row["dummy_seed"] == 0 and row["defense_seed"] is None
        assert row["device"] == "cpu" and row["commit"] and row["version"]
        assert row["diverged"] == (not math.isfinite(row["mse"]) or row["mse"] > 1)
    before = csv.read_bytes()

    def must_not_run(*args):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(ReconstructionSpec, "run", must_not_run)
    assert experiments.main(["run", str(grid), "--output", str(csv), "--no_progress"]) == 0
    assert csv.read_bytes() == before  # same rows, same timestamps
    sessions = json.loads(runner.sessions_path(csv).read_text())
    assert [(s["runs_done"], s["runs_skipped"], s["status"]) for s in sessions] == [(2, 0, "complete"),
                                                                                     (0, 2, "complete")]


def test_a_partial_last_line_is_dropped_and_its_run_redone(tmp_path):
    grid, csv = _write(tmp_path / "two.toml", TWO_CELLS.replace("soteria = [40]", "")), tmp_path / "one.csv"
    assert experiments.main(["run", str(grid), "--output", str(csv), "--no_progress"]) == 0
    text = csv.read_text()
    csv.write_text(text + text.splitlines()[1][:30])  # a row cut short, as by a crash mid-write
    assert len(read_rows(csv)) == 1
    prepare(csv)
    assert csv.read_text() == text


def test_fedavg_cells_run_once(tmp_path, data_root):
    grid = _write(tmp_path / "fa.toml", TWO_CELLS.replace("soteria = [40]", "") +
                  f'[fedavg]\ndatasets = ["mnist"]\noutput = "{tmp_path / "fa"}"\noptions = {{rounds = 1}}\n')
    csv = tmp_path / "fa.csv"
    args = ["run", str(grid), "--output", str(csv), "--no_progress", "--data_root", str(data_root)]
    assert experiments.main(args) == 0
    metrics = json.loads((tmp_path / "fa" / "mnist_none_none" / "metrics.json").read_text())
    assert metrics["rounds"] == 1 and 0 < metrics["final_accuracy"] <= 1
    assert experiments.main(args) == 0
    last = json.loads(runner.sessions_path(csv).read_text())[-1]
    assert (last["fedavg_done"], last["fedavg_skipped"]) == (0, 1)


BAD_GRIDS = [
    ('[attacks.dlgx]\ndatasets = ["mnist"]', "unknown attack 'dlgx'"),
    ('[attacks.dlg]\ndatasets = ["svhn"]', "unknown name 'svhn'"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\nrestarts = 2', "unknown key 'restarts'"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\nattack_options = {tv = 0.1}', "has no option 'tv'"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = -3', "max_iterations.mnist must be an integer >= 0"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = {cifar10 = 3}', "no budget for dataset 'mnist'"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\n[fedavg]\ndatasets = ["mnist"]\noutput = "unused"\n'
     'options = {rounds = "x"}', "fedavg.options"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\n[fedavg]\ndatasets = ["mnist"]\noutput = "unused"\n'
     'options = {lr = -1.0}', "fedavg.options: lr must be a finite number > 0"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\n[fedavg]\ndatasets = ["mnist"]\noutput = "unused"\n'
     'options = {alpha = 0.0}', "fedavg.options: alpha must be a finite number > 0"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\n[fedavg]\ndatasets = ["mnist"]\noutput = "unused"\n'
     'options = {iterations = 3}', "unknown FedAvg option 'iterations'"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\n[fedavg]\ndatasets = ["mnist"]\noutput = "unused"\n'
     'options = {model = "resnet"}', "fedavg.options: unknown model 'resnet'"),
    ('[attacks.gs]\ndatasets = ["mnist"]\nattack_options = {restarts = 0}', "restarts must be an integer >= 1"),
    ('[attacks.gs]\ndatasets = ["mnist"]\nattack_options = {cost_fn = "cos"}', "unknown cost_fn 'cos'"),
    ('[attacks.gs]\ndatasets = ["mnist"]\nattack_options = {tv = -1.0}', "tv must be a finite number >= 0"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\nattack_options = {lr = 0.0}', "lr must be a finite number > 0"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\nattack_options = {max_iterations = 3}', "as a key of attacks.dlg itself"),
]


@pytest.mark.parametrize("defenses, attacks_or_needle", [
    ("none = true\nmagic = [1]", "unknown defense 'magic'"),
    ("soteria = [120]", "pruning_rate must be a percentage in [0, 100)"),
    ("prune = [-5]", "pruning_rate must be a percentage"),
    ("dp-gaussian = [-0.1]", "noise must be a finite number > 0"),
    ("soteria = []", "the list is empty"),
    ("soteria = [20, 20]", "listed twice"),
    ("none = 1", "expected bool"),
] + [("none = true", bad) for bad in BAD_GRIDS])
def test_bad_grid_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, defenses, attacks_or_needle):
    attacks, needle = (attacks_or_needle if isinstance(attacks_or_needle, tuple)
                       else ('[attacks.dlg]\ndatasets = ["mnist"]', attacks_or_needle))
    grid = _write(tmp_path / "bad.toml", f'scale = "teaching"\nimages = [-1]\nseeds = [0]\n'
                                         f"[defenses]\n{defenses}\n{attacks}\n")
    csv = tmp_path / "bad.csv"
    assert experiments.main(["run", str(grid), "--output", str(csv), "--no_progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def _damaged_sessions(tmp_path):
    (tmp_path / "out.sessions.json").write_text('[{"command": "cut sh')


def _damaged_cell(tmp_path):
    cell = tmp_path / "fa" / "mnist_none_none"
    cell.mkdir(parents=True)
    (cell / "metrics.json").write_text("{not json")


RUN_ERRORS = [
    (["--output", "/proc/soteria.csv"], None, "is not writable"),
    (["--output", "."], None, "results file . exists and is not a file"),
    (["--workers", "0"], None, "--workers: must be a positive integer"),
    ([], _damaged_sessions, "out.sessions.json is damaged"),
    (["--fedavg", "fa"], _damaged_cell, "mnist_none_none/metrics.json is damaged"),
]


@pytest.mark.parametrize("flags, prepare_folder, needle", RUN_ERRORS)
def test_run_refuses_bad_places_and_damaged_files_before_running(tmp_path, monkeypatch, capsys, flags,
                                                                 prepare_folder, needle):
    monkeypatch.chdir(tmp_path)
    grid = _write(tmp_path / "g.toml", TWO_CELLS + '[fedavg]\ndatasets = ["mnist"]\n[fedavg.defenses]\nnone = true\n')
    if prepare_folder:
        prepare_folder(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    output = [] if "--output" in flags else ["--output", "out.csv"]
    assert run_main(experiments.main, ["run", str(grid), *output, *flags, "--no_progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in lines[0], lines
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("text, needle", [
    (None, "is a folder"),
    ('scale = "teaching"\nimages = [-1]\nseeds = [4294967296]\n[defenses]\nnone = true\n'
     '[attacks.dlg]\ndatasets = ["mnist"]', "grid.seeds: a seed is an integer in [0, 4294967295]"),
])
def test_bad_grid_files_are_named(tmp_path, capsys, text, needle):
    grid = tmp_path / "grid.toml"
    grid.mkdir() if text is None else grid.write_text(text)
    assert experiments.main(["run", str(grid), "--output", str(tmp_path / "x.csv"), "--no_progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "x.csv").exists()


def test_summarize_refuses_a_folder_and_a_damaged_log(tmp_path, capsys):
    assert experiments.main(["summarize", str(tmp_path), "--output", str(tmp_path / "s.md")]) == 2
    assert "is not a file" in capsys.readouterr().err
    csv = tmp_path / "r.csv"
    prepare(csv)
    (tmp_path / "r.sessions.json").write_text("{")
    assert experiments.main(["summarize", str(csv), "--output", str(tmp_path / "s.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("holds no results" in err[0] or "damaged" in err[0]), err
    assert not (tmp_path / "s.md").exists()


def test_missing_grid_file_exits_2_from_the_shell(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "soteria_lib.experiments", "run", str(tmp_path / "nope.toml"),
                           "--output", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"soteria-experiments run: error: grid file {tmp_path / 'nope.toml'} "
                                                "does not exist"]
    assert not (tmp_path / "x.csv").exists()


def test_summarize_missing_csv_exits_2(tmp_path, capsys):
    assert experiments.main(["summarize", str(tmp_path / "none.csv"), "--output", str(tmp_path / "s.md")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s.md").exists()


# Many short runs: the sweep is still busy when it is signalled.
MANY = TWO_CELLS.replace("seeds = [0]", "seeds = [" + ", ".join(str(s) for s in range(40)) + "]").replace(
    "max_iterations = 2", "max_iterations = 40")


def _rows(csv) -> int:
    return len(read_rows(csv)) if csv.exists() else 0


@pytest.mark.parametrize("workers, sig, code", [(1, signal.SIGINT, 130), (2, signal.SIGINT, 130),
                                                (1, signal.SIGTERM, 143), (2, signal.SIGTERM, 143)])
def test_a_signal_stops_the_sweep_keeps_its_rows_and_leaves_no_worker(tmp_path, workers, sig, code):
    grid, csv = _write(tmp_path / "many.toml", MANY), tmp_path / "many.csv"
    process = start("experiments", "run", str(grid), "--output", str(csv), "--workers", str(workers),
                    "--no_progress", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    wait_until(lambda: _rows(csv) >= 1, what="a first finished row")
    pids = children(process.pid)
    interrupt(process, sig)
    returncode, err = finish(process)
    assert returncode == code and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith("interrupted; finished runs are kept, run again to resume")
    done = read_rows(csv)  # every row complete and typed
    assert 1 <= len(done) < 80 and len({(r["defense"], r["seed"]) for r in done}) == len(done)
    assert runner.read_sessions(csv)[-1]["status"] == "interrupted"
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=60, what="the workers to end")


def test_killing_the_sweep_kills_its_workers(tmp_path):
    """Workers busy with long attacks (100,000 L-BFGS steps) die with their parent, even by SIGKILL."""
    grid, csv = _write(tmp_path / "long.toml", MANY.replace("max_iterations = 40", "max_iterations = 100000")), \
        tmp_path / "long.csv"
    process = start("experiments", "run", str(grid), "--output", str(csv), "--workers", "2", "--no_progress",
                    cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    wait_until(lambda: len(spawned_workers(process.pid)) >= 2, what="two workers")
    pids = spawned_workers(process.pid)
    # their initialisers have run (they then take their first runs): the death signal is set
    wait_until(lambda: all(handlers_installed(pid) for pid in pids), what="the workers' initialisers")
    interrupt(process, signal.SIGKILL)
    process.wait(timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=60, what="the orphaned workers to die")
    assert _rows(csv) == 0  # no run of 100,000 steps finished, and nothing half-written appeared


def test_a_summary_of_a_grid_that_trains_no_fedavg_reads_no_accuracies(tmp_path, monkeypatch):
    """A tuning grid trains no FedAvg cells: its rows are never compared at matched accuracy with
    whatever lies in the default folder. With --grid the folder is the grid's (none here); without,
    the default one."""
    monkeypatch.chdir(tmp_path)
    grid, csv = _write(tmp_path / "two.toml", TWO_CELLS), tmp_path / "two.csv"
    assert experiments.main(["run", str(grid), "--output", str(csv), "--no_progress"]) == 0
    with_grid, plain = tmp_path / "g.md", tmp_path / "p.md"
    assert experiments.main(["summarize", str(csv), "--grid", str(grid), "--output", str(with_grid)]) == 0
    assert experiments.main(["summarize", str(csv), "--output", str(plain)]) == 0
    assert "no FedAvg cells (the grid trains none" in with_grid.read_text()
    assert json.loads(with_grid.with_suffix(".json").read_text())["fedavg_dir"] is None
    assert "the FedAvg cells in `results/fedavg`" in plain.read_text()
