"""The reproduction sweep: grid files, resuming, the summary's ratios, and the committed results."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from soteria_lib.experiments import cli, sweep
from soteria_lib.experiments.fedavg_cells import cell_dir, expected_config, is_done
from soteria_lib.experiments.grid import DefenseSetting, GridError, ReconstructionSpec, load_grid
from soteria_lib.experiments.results import COLUMNS, append_row, prepare, read_rows, spec_from_row
from soteria_lib.experiments.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "teaching.csv"

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
    assert cli.main(["run", str(grid), "--output", str(csv), "--workers", "2", "--no_progress"]) == 0
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

    monkeypatch.setitem(sweep.TASK_RUNNERS, ReconstructionSpec, must_not_run)
    assert cli.main(["run", str(grid), "--output", str(csv), "--no_progress"]) == 0
    assert csv.read_bytes() == before  # same rows, same timestamps
    sessions = json.loads(sweep.sessions_path(csv).read_text())
    assert [(s["runs_done"], s["runs_skipped"], s["status"]) for s in sessions] == [(2, 0, "complete"),
                                                                                     (0, 2, "complete")]


def test_a_partial_last_line_is_dropped_and_its_run_redone(tmp_path):
    grid, csv = _write(tmp_path / "two.toml", TWO_CELLS.replace("soteria = [40]", "")), tmp_path / "one.csv"
    assert cli.main(["run", str(grid), "--output", str(csv), "--no_progress"]) == 0
    text = csv.read_text()
    csv.write_text(text + text.splitlines()[1][:30])  # a row cut short, as by a crash mid-write
    assert len(read_rows(csv)) == 1
    prepare(csv)
    assert csv.read_text() == text


def _row(**values) -> dict:
    """A complete results row with neutral defaults."""
    row = {c: "" for c in COLUMNS}
    row.update(attack="dlg", dataset="mnist", scale="teaching", max_iterations=10, adaptive=False,
               attack_options="{}", defense="none", pruning_rate=0.0, noise=0.0, target_id=0, seed=0,
               model="lenet", model_options="{}", model_seed=0, dummy_seed=0, noise_seed=None, label=0,
               mse=1.0, mse_normalized=1.0, psnr=0.0, ssim=0.0, label_accuracy=1.0, matching_loss=0.0,
               iterations=10, diverged=False, seconds=1.0, cpu_seconds=1.0, attack_seconds=1.0, device="cpu",
               version="0", commit="x", finished_at="t")
    row.update(values)
    return row


def _fedavg_cell(root: Path, dataset: str, setting: DefenseSetting, accuracy: float) -> None:
    from soteria_lib.experiments.grid import FedAvgSpec

    spec = FedAvgSpec(dataset, setting, "teaching", root, {})
    cell_dir(spec).mkdir(parents=True)
    (cell_dir(spec) / "metrics.json").write_text(json.dumps({**expected_config(spec), "final_accuracy": accuracy}))


def test_summary_ratio_uses_the_matched_rows(tmp_path):
    csv = tmp_path / "hand.csv"
    prepare(csv)
    cells = {  # (defense, value) -> MSEs of three runs; medians 1, 1, 4, 0.2, 0.5, 0.3
        ("none", 0.0): [1.0, 1.0, 1.0], ("soteria", 20.0): [0.5, 1.0, 2.0], ("soteria", 40.0): [3.0, 4.0, 5.0],
        ("prune", 20.0): [0.1, 0.2, 0.3], ("prune", 40.0): [0.4, 0.5, 10.0], ("dp-gaussian", 0.01): [0.3] * 3,
    }
    for (defense, value), mses in cells.items():
        for image, mse in enumerate(mses):
            fields = {"noise": value} if defense == "dp-gaussian" else {"pruning_rate": value}
            for extra in ({}, {"max_iterations": 99, "mse": 1e6}, {"attack": "gs", "mse": 1e6}):  # decoys
                append_row(csv, _row(defense=defense, target_id=image, **fields,
                                     **{"mse": mse, "mse_normalized": 10 * mse, "diverged": mse > 1, **extra}))
    fedavg = tmp_path / "fedavg"
    accuracies = {("none", 0.0): 0.92, ("soteria", 20.0): 0.90, ("soteria", 40.0): 0.88,
                  ("prune", 20.0): 0.89, ("prune", 40.0): 0.87, ("dp-gaussian", 0.01): 0.95}
    for (defense, value), accuracy in accuracies.items():
        _fedavg_cell(fedavg, "mnist", DefenseSetting(defense, value), accuracy)

    groups, _ = summarize(csv, fedavg)
    group = next(g for g in groups if g.params["attack"] == "dlg" and g.params["max_iterations"] == 10)
    assert len(groups) == 3 and all(c.runs == 3 for c in group.cells)
    prune40 = next(c for c in group.cells if c.setting == DefenseSetting("prune", 40.0))
    assert (prune40.mse.q1, prune40.mse.median, prune40.mse.q3, prune40.diverged) == (0.45, 0.5, 5.25, 1)
    matches = {m.baseline: m for m in group.matches}
    # prune 20 % (89 %): only Soteria 20 % (90 %) is at least as accurate -> 1.0 / 0.2
    assert matches[DefenseSetting("prune", 20.0)].soteria == DefenseSetting("soteria", 20.0)
    assert matches[DefenseSetting("prune", 20.0)].ratio_mse == pytest.approx(5.0)
    # prune 40 % (87 %): Soteria 40 % (88 %) is closer than 20 % (90 %) -> 4.0 / 0.5
    assert matches[DefenseSetting("prune", 40.0)].soteria == DefenseSetting("soteria", 40.0)
    assert matches[DefenseSetting("prune", 40.0)].ratio_mse == pytest.approx(8.0)
    assert matches[DefenseSetting("prune", 40.0)].ratio_mse_normalized == pytest.approx(8.0)
    assert matches[DefenseSetting("prune", 40.0)].ratio_capped == pytest.approx(1.0 / 0.5)  # 4 counts as 1
    # Gaussian noise (95 %): no Soteria setting is as accurate -> no ratio
    assert matches[DefenseSetting("dp-gaussian", 0.01)].soteria is None
    assert matches[DefenseSetting("dp-gaussian", 0.01)].ratio_mse is None

    out = tmp_path / "report" / "summary.md"
    assert cli.main(["summarize", str(csv), "--fedavg", str(fedavg), "--output", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    dlg = next(g for g in data["groups"] if g["attack"] == "dlg" and g["max_iterations"] == 10)
    assert [m["ratio_mse"] for m in dlg["matched"]] == [pytest.approx(5.0), pytest.approx(8.0), None]
    assert "| DLG | MNIST | 20 % | 89.00 % | 20 % | 90.00 % | 0.2 | 1 | **5** |" in out.read_text()
    for name in ("summary_mse_vs_rate.png", "summary_mse_vs_accuracy.png"):
        assert (out.parent / name).read_bytes().startswith(b"\x89PNG")


def test_fedavg_cell_is_skipped_only_for_its_own_config(tmp_path):
    from soteria_lib.experiments.grid import FedAvgSpec

    spec = FedAvgSpec("mnist", DefenseSetting("soteria", 50.0), "teaching", tmp_path, {"rounds": 5})
    assert cell_dir(spec) == tmp_path / "mnist_soteria_p50" and not is_done(spec)
    _fedavg_cell(tmp_path, "mnist", DefenseSetting("soteria", 50.0), 0.9)  # default rounds
    assert is_done(FedAvgSpec("mnist", DefenseSetting("soteria", 50.0), "teaching", tmp_path, {}))
    with pytest.raises(GridError, match="rounds"):
        is_done(FedAvgSpec("mnist", DefenseSetting("soteria", 50.0), "teaching", tmp_path, {"rounds": 7}))
    noise = FedAvgSpec("mnist", DefenseSetting("dp-laplace", 0.01), "teaching", tmp_path, {})
    assert cell_dir(noise).name == "mnist_dp-laplace_s0.01"


def test_fedavg_cells_run_once(tmp_path, data_root):
    grid = _write(tmp_path / "fa.toml", TWO_CELLS.replace("soteria = [40]", "") +
                  f'[fedavg]\ndatasets = ["mnist"]\noutput = "{tmp_path / "fa"}"\noptions = {{rounds = 1}}\n')
    csv = tmp_path / "fa.csv"
    args = ["run", str(grid), "--output", str(csv), "--no_progress", "--data_root", str(data_root)]
    assert cli.main(args) == 0
    metrics = json.loads((tmp_path / "fa" / "mnist_none_none" / "metrics.json").read_text())
    assert metrics["rounds"] == 1 and 0 < metrics["final_accuracy"] <= 1
    assert cli.main(args) == 0
    last = json.loads(sweep.sessions_path(csv).read_text())[-1]
    assert (last["fedavg_done"], last["fedavg_skipped"]) == (0, 1)


def test_a_committed_row_reproduces_its_mse(data_root):
    if not COMMITTED.exists():
        pytest.skip("results/teaching.csv has not been generated")
    rows = [r for r in read_rows(COMMITTED) if r["attack"] == "dlg" and r["dataset"] == "mnist"
            and r["device"] == "cpu" and r["defense"] == "none" and not r["diverged"]]
    row = min(rows, key=lambda r: r["seconds"])
    torch.set_num_threads(1)  # as in the sweep's workers
    fresh = sweep.run_reconstruction_task(spec_from_row(row), "cpu", str(data_root), "test")
    assert fresh["mse"] == pytest.approx(row["mse"], rel=1e-3, abs=1e-7)
    assert fresh["label"] == row["label"]


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
    assert cli.main(["run", str(grid), "--output", str(csv), "--no_progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not csv.exists()


@pytest.mark.parametrize("text, needle", [
    ('scale = "huge"\nimages = [0]\nseeds = [0]\n[defenses]\nnone = true\n[attacks.dlg]\ndatasets = ["mnist"]',
     "no scale 'huge'"),
    ('scale = "teaching"\nimages = [-2]\nseeds = [0]\n[defenses]\nnone = true\n[attacks.dlg]\ndatasets = ["mnist"]',
     "target ids are -1"),
    ('scale = "teaching"\nimages = ["a"]\nseeds = [0]\n[defenses]\nnone = true\n[attacks.dlg]\ndatasets = ["mnist"]',
     "expected int"),
    ('scale = "teaching"\nimages = [0]\n[defenses]\nnone = true\n[attacks.dlg]\ndatasets = ["mnist"]',
     "missing key 'seeds'"),
    ("scale = [", "not valid TOML"),
])
def test_bad_top_level_grid(tmp_path, text, needle):
    with pytest.raises(GridError, match=needle.replace("[", r"\[")):
        load_grid(_write(tmp_path / "bad.toml", text))


def test_missing_grid_file_exits_2_from_the_shell(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "soteria_lib.experiments", "run", str(tmp_path / "nope.toml"),
                           "--output", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"soteria-experiments run: error: grid file {tmp_path / 'nope.toml'} "
                                                "does not exist"]
    assert not (tmp_path / "x.csv").exists()


def test_summarize_missing_csv_exits_2(tmp_path, capsys):
    assert cli.main(["summarize", str(tmp_path / "none.csv"), "--output", str(tmp_path / "s.md")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s.md").exists()


def test_shipped_grids_load():
    teaching = load_grid(ROOT / "experiments" / "teaching.toml")
    per_cell = {}
    for spec in teaching.reconstructions:
        key = (spec.attack, spec.dataset, spec.setting)
        per_cell.setdefault(key, set()).add((spec.target_id, spec.seed))
    assert all(len({i for i, _ in v}) >= 10 and len({s for _, s in v}) >= 3 for v in per_cell.values())
    assert {(a, d) for a, d, _ in per_cell} == {(a, d) for a in ("dlg", "gs") for d in ("mnist", "cifar10")}
    paper = load_grid(ROOT / "experiments" / "paper.toml")
    assert {s.scale for s in paper.reconstructions} == {"paper"}
