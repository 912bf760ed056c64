"""A defense is one file: the toy defenses of tests/toy_defenses.py, registered there and nowhere
else, reach both command lines, a grid, a results row, the summary and FedAvg (issue 25)."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from soteria_lib.data import Normalization
from soteria_lib.defenses import DEFENSES, STAGES, Defense, DefenseSetting, from_flags, register_defense
from soteria_lib.federated import FedAvgConfig, run_fedavg
from soteria_lib.models import get_model
from soteria_lib.pipeline import Setup, run_reconstruction
from soteria_lib.sweep.grid import load_grid
from soteria_lib.sweep.results import read_rows
from soteria_lib.threat import PrivateBatch, share_update

TOYS = Path(__file__).with_name("toy_defenses.py")
sys.path.insert(0, str(TOYS.parent))
import toy_defenses  # noqa: E402,F401  (registers blur and widen in this process)


def _run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOTERIA_EXTENSIONS": str(TOYS)}
    return subprocess.run([sys.executable, "-m", f"soteria_lib.{module}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_a_registration_declares_where_it_acts_and_its_settings():
    blur, widen = DEFENSES["blur"], DEFENSES["widen"]
    assert blur.acts_on == {"data"} and widen.acts_on == {"model"} and set(STAGES) >= blur.acts_on
    assert blur.settings() == {"radius": 1.0, "passes": 1}
    setting = DefenseSetting.of("blur", radius=2, passes=3)
    assert (setting.label(), setting.tag(), setting.to_json()) == ("blur 2px passes=3", "r2_passes3",
                                                                   '{"passes":3,"radius":2.0}')
    assert DefenseSetting.from_json("blur", setting.to_json()) == setting
    with pytest.raises(ValueError, match="passes must be an integer"):
        DefenseSetting.of("blur", passes=0)
    with pytest.raises(ValueError, match="no setting 'sigma'"):
        DefenseSetting.of("blur", sigma=1.0)
    with pytest.raises(ValueError, match="pruning_rate does not apply to defense 'blur'"):
        from_flags("blur", pruning_rate=10)


def test_a_registration_must_override_exactly_the_hooks_it_declares():
    with pytest.raises(ValueError, match="declares acts_on"):
        @register_defense("liar", title="liar", order=99, style=("k", "o"), acts_on=("update",))
        class Liar(Defense):
            def on_data(self, inputs, labels):
                return inputs, labels
    assert "liar" not in DEFENSES


def test_the_data_defense_changes_what_the_client_trains_on_and_nothing_it_keeps():
    torch.manual_seed(0)
    model = get_model("lenet", (1, 28, 28))
    batch = PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([3]))
    blur = DefenseSetting.of("blur", radius=1).build()
    blurred, _ = blur.on_data(batch.inputs, batch.labels)
    shared = share_update(model, batch, Normalization.identity(1), blur)
    again = share_update(model, PrivateBatch(blurred, batch.labels), Normalization.identity(1))
    assert all(torch.equal(a, b) for a, b in zip(shared.gradients, again.gradients))
    assert shared.metadata.defense == "blur" and shared.metadata.defense_settings == {"radius": 1.0}
    assert not torch.equal(blurred, batch.inputs)


def test_the_model_defense_changes_the_model_fedavg_trains_and_nothing_else():
    torch.manual_seed(0)
    train = (torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,)))
    test = (torch.rand(20, 1, 28, 28), torch.randint(0, 10, (20,)))
    config = FedAvgConfig(clients=4, fraction=0.5, rounds=2, batch_size=5, lr=0.05)
    widen = DefenseSetting("widen").build()

    def model():
        torch.manual_seed(1)
        return get_model("lenet", (1, 28, 28), init="default", activation="relu")

    widened = widen.on_model(model())
    by_hand = torch.nn.Sequential(model(), copy.deepcopy(widened[1]))  # the same layer, added without the defense
    with_defense = run_fedavg(widened, train, test, config, widen, progress=False)
    without = run_fedavg(by_hand, train, test, config, None, progress=False)
    assert [r["accuracy"] for r in with_defense] == [r["accuracy"] for r in without]
    assert all(torch.equal(a, b) for a, b in zip(widened.state_dict().values(), by_hand.state_dict().values()))
    assert len(list(widened.parameters())) == len(list(model().parameters())) + 2


def test_both_command_lines_take_the_toy_defense_and_its_own_setting(tmp_path, data_root):
    out = tmp_path / "rec"
    proc = _run("reconstruct", "--attack=dlg", "--dataset=mnist", "--target_id=0", "--defense=blur",
                "--set", "radius=2", "--set", "passes=2", "--max_iterations=2", "--no_progress",
                f"--data_root={data_root}", f"--output={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["defense"] == "blur" and metrics["defense_settings"] == {"radius": 2.0, "passes": 2}
    bad = _run("reconstruct", "--defense=blur", "--set", "radius=9", f"--output={out}", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "radius must be" in bad.stderr
    fed = tmp_path / "fed"
    proc = _run("fedavg", "--defense=widen", "--rounds=1", "--clients=2", "--fraction=0.5", "--no_progress",
                f"--data_root={data_root}", f"--output={fed}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((fed / "metrics.json").read_text())
    assert result["defense"] == "widen" and result["defense_settings"] == {}


def test_a_grid_a_results_row_and_the_summary_take_the_toy_defense(tmp_path, data_root):
    grid = tmp_path / "toy.toml"
    grid.write_text('scale = "teaching"\nimages = [0]\nseeds = [0]\n[defenses]\nnone = true\n'
                    'blur = [1, {radius = 2, passes = 2}]\n'
                    '[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = 2\n')
    labels = sorted(s.setting.label() for s in load_grid(grid).reconstructions)
    assert labels == ["blur 1px", "blur 2px passes=2", "none"]
    csv = tmp_path / "toy.csv"
    proc = _run("experiments", "run", str(grid), "--output", str(csv), "--workers", "2", "--threads", "1",
                "--no_progress", "--data_root", str(data_root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(csv)
    assert sorted(r["defense_settings"] for r in rows if r["defense"] == "blur") == [
        '{"passes":2,"radius":2.0}', '{"radius":1.0}']
    summary = tmp_path / "summary.md"
    proc = _run("experiments", "summarize", str(csv), "--output", str(summary), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = summary.read_text()
    assert "| blur 1px | " in text and "| blur 2px passes=2 | " in text


def test_an_extension_that_fails_to_load_is_one_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('nope')\n")
    proc = subprocess.run([sys.executable, "-m", "soteria_lib.reconstruct", "--help"], cwd=tmp_path,
                          env={**os.environ, "SOTERIA_EXTENSIONS": str(broken)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "broken.py failed to load" in proc.stderr


def test_the_pipeline_records_the_effective_pruning_rate(data_root):
    setup = Setup(attack="dlg", dataset="mnist", target_id=0, defense="prune", defense_settings={"pruning_rate": 60},
                  attack_options={"max_iterations": 1}, data_root=str(data_root))
    rate = run_reconstruction(setup, progress=False).metrics["effective_rate"]
    assert 0.55 < rate < 0.65  # magnitude pruning removes its nominal share of the live entries
