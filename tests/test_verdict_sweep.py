"""The verdict sweep end to end on a tiny grid (issue 26): FedAvg cells keep their global models,
the attacks on trained models wait for them and read them, every row records its effective
pruning rate and trivial guess, and the summary has the primary family and the frontier figure."""
import json

import pytest

from soteria_lib import experiments
from soteria_lib.sweep.grid import load_grid
from soteria_lib.sweep.results import read_rows

TINY = """
scale = "teaching"
images = [0, 1]
seeds = [0, 1]

[defenses]
none = true
soteria = [80]
prune = [50]

[attacks.dlg]
datasets = ["mnist"]
max_iterations = 2
model = "lenet"
model_options = {activation = "sigmoid", init = "uniform"}
input_space = "pixels"
attack_options = {infer_labels = true, box = "sigmoid"}
attackers = ["plain", "mask-aware", "layer-dropping"]
model_states = ["init", "round:1"]

[fedavg]
datasets = ["mnist"]
seeds = [0, 1]
output = "FEDAVG"
options = {model = "lenet", model_options = {activation = "sigmoid", init = "uniform"}, input_space = "pixels", batch_size = 1, rounds = 1, clients = 100, fraction = 0.01}

[verdict]
soteria = 80
baselines = ["prune"]
margins = {mnist = 0.5}
"""


def test_a_tiny_verdict_sweep_runs_resumes_and_summarises(tmp_path, data_root):
    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY.replace("FEDAVG", str(tmp_path / "fedavg")))
    loaded = load_grid(grid)
    trained = [s for s in loaded.reconstructions if s.model_state == "round:1"]
    assert trained and all(s.model_file.endswith("global_round1.pt") for s in trained)
    assert {f.snapshots for f in loaded.fedavg} == {(1,)}
    csv = tmp_path / "tiny.csv"
    args = ["run", str(grid), "--output", str(csv), "--workers", "2", "--threads", "1", "--no_progress",
            "--data_root", str(data_root)]
    assert experiments.main(args) == 0
    rows = read_rows(csv)
    assert len(rows) == len(loaded.reconstructions) == 2 * 2 * 2 * (1 + 3 + 2)
    assert all(r["mse_trivial"] > 0 and r["input_space"] == "pixels" for r in rows)
    rates = {r["defense"]: r["effective_rate"] for r in rows if r["attacker"] == "plain"}
    assert rates["none"] == 0 and 0 < rates["soteria"] <= 1 and 0.4 < rates["prune"] < 0.6
    assert (tmp_path / "fedavg" / "mnist_soteria_p80_seed1" / "global_round1.pt").is_file()
    before = csv.read_bytes()
    assert experiments.main(args) == 0 and csv.read_bytes() == before  # nothing left to run
    summary = tmp_path / "verdict.md"
    assert experiments.main(["summarize", str(csv), "--fedavg", str(tmp_path / "fedavg"), "--grid", str(grid),
                             "--output", str(summary)]) == 0
    text = summary.read_text()
    assert "## Primary comparisons" in text and "| DLG, MNIST | gradient pruning 50 % |" in text
    assert text.index("## Findings") < text.index("<!-- the tables -->") < text.index("## Primary comparisons")
    assert "(complete)" in text and "provisional" not in text  # the whole tiny grid ran
    assert summary.with_name("verdict_frontier.png").stat().st_size > 1000
    record = json.loads(summary.with_suffix(".json").read_text())
    assert record["progress"] == {"runs": len(rows), "runs_asked": len(rows), "fedavg": len(loaded.fedavg),
                                  "fedavg_asked": len(loaded.fedavg)}
    states = {e["model_state"] for e in record["experiments"]}
    assert states == {"init", "round:1"}
    assert {f["label"] for f in record["fedavg"]} == {f.setting.label() for f in loaded.fedavg}
    for fedavg in record["fedavg"]:  # one round: what it still gained is its whole gain, over the seeds
        cells = [f for f in loaded.fedavg if f.setting.label() == fedavg["label"]]
        histories = [json.loads((f.folder() / "metrics.json").read_text())["history"] for f in cells]
        gains = [h[1]["accuracy"] - h[0]["accuracy"] for h in histories]
        assert len(gains) == 2 and fedavg["late_gain"] == pytest.approx(sum(gains) / 2)


def test_runs_on_a_model_a_diverged_training_never_kept_are_skipped(tmp_path):
    """A FedAvg cell that diverged in round 3 keeps no model of round 5: the cell still counts as
    done, and the runs on that model are left out of the wave (the session log counts them)."""
    from soteria_lib.sweep.runner import is_done, without_models

    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY.replace("FEDAVG", str(tmp_path / "fedavg")).replace('"round:1"', '"round:5"')
                    .replace("rounds = 1", "rounds = 6"))
    loaded = load_grid(grid)
    cell = loaded.fedavg[0]
    cell.folder().mkdir(parents=True)
    record = {**cell.experiment().identity(), "final_accuracy": 0.1, "diverged_round": 3}
    (cell.folder() / "metrics.json").write_text(json.dumps(record))
    assert is_done(cell)
    record["diverged_round"] = None  # a finished run must have kept the model
    (cell.folder() / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="lacks the global model of round 5"):
        is_done(cell)
    trained = [s for s in loaded.reconstructions if s.model_state == "round:5"]
    runnable, skipped = without_models(trained)
    assert runnable == [] and skipped == trained
