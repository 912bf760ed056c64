"""The sweep's command line: running, resuming, FedAvg cells, and bad grids (exit 2, one line)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from soteria_lib import experiments
from soteria_lib.sweep import runner
from soteria_lib.sweep.grid import ReconstructionSpec
from soteria_lib.sweep.results import prepare, read_rows

# Two cells (no defense, Soteria 40 %) of one run each on the embedded photograph: no dataset needed.
TWO_CELLS = """
scale = "teaching"
images = [-1]
seeds = [0]

[defenses]
none = true
soteria = [40]

[attacks.dlg]
datasets = ["mnist"]
max_iterations = 2
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_two_cell_grid_runs_end_to_end_then_resumes_without_running(tmp_path, monkeypatch):
    grid, csv = _write(tmp_path / "two.toml", TWO_CELLS), tmp_path / "out" / "two.csv"
    assert experiments.main(["run", str(grid), "--output", str(csv), "--workers", "2", "--no_progress"]) == 0
    rows = read_rows(csv)
    assert sorted((r["defense"], r["pruning_rate"]) for r in rows) == [("none", 0.0), ("soteria", 40.0)]
    for row in rows:
        assert row["attack"] == "dlg" and row["dataset"] == "mnist" and row["iterations"] == 2
        assert row["model_seed"] == row["dummy_seed"] == 0 and row["noise_seed"] is None
        assert row["device"] == "cpu" and row["commit"] and row["version"]
        assert row["diverged"] == (not math.isfinite(row["mse"]) or row["mse"] > 1)
    before = csv.read_bytes()

    def must_not_run(*args):
        raise AssertionError("a finished run was run again")

    monkeypatch.setitem(runner.TASK_RUNNERS, ReconstructionSpec, must_not_run)
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
    ('[attacks.dlg]\ndatasets = ["mnist"]\nattack_options = {restarts = 2}', "has no option 'restarts'"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = -3', "must be >= 0"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = {cifar10 = 3}', "no budget for dataset 'mnist'"),
    ('[attacks.dlg]\ndatasets = ["mnist"]\n[fedavg]\ndatasets = ["mnist"]\noutput = "unused"\n'
     'options = {rounds = "x"}', "fedavg.options"),
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
    assert not csv.exists()


def test_missing_grid_file_exits_2_from_the_shell(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "soteria_lib.experiments", "run", str(tmp_path / "nope.toml"),
                           "--output", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"soteria-experiments run: error: grid file {tmp_path / 'nope.toml'} "
                                                "does not exist"]
    assert not (tmp_path / "x.csv").exists()


def test_summarize_missing_csv_exits_2(tmp_path, capsys):
    assert experiments.main(["summarize", str(tmp_path / "none.csv"), "--output", str(tmp_path / "s.md")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s.md").exists()
