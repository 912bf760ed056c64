"""One registration adds a defense everywhere: the command lines, the grid parser, the FedAvg
folders, the summary's tables and its figures."""
import json

import pytest
import torch

from soteria_lib import fedavg, reconstruct
from soteria_lib.defenses import DEFENSES, DefenseSetting, defense_params, get_defense, register_defense
from soteria_lib.defenses.registry import ALIASES
from soteria_lib.sweep.grid import load_grid
from soteria_lib.sweep.plots import mse_against_rate
from soteria_lib.sweep.report import render
from soteria_lib.sweep.results import append_row, prepare
from soteria_lib.sweep.tasks import reconstruction_row
from soteria_lib.sweep.summary import summarize


@pytest.fixture
def toy():
    """A toy defense that shrinks the whole update by its rate: (1 - p / 100) g."""

    @register_defense("shrink", title="shrinking", order=9, style=("tab:orange", "D"), strength="pruning_rate",
                      keyword="rate", aliases=("toy",))
    class Shrink:
        def __init__(self, rate: float = 0.0):
            self.factor = 1 - rate / 100

        def __call__(self, model, inputs, labels, gradients):
            return tuple(self.factor * g for g in gradients)

    yield DEFENSES["shrink"]
    DEFENSES.pop("shrink")
    ALIASES.pop("toy")


def test_a_registered_defense_runs_from_the_command_line(toy, tmp_path):
    assert reconstruct.build_parser().parse_args(["--defense", "toy"]).defense == "toy"
    assert fedavg.build_parser().parse_args(["--defense", "shrink"]).defense == "shrink"
    out = tmp_path / "run"
    assert reconstruct.main(["--attack=dlg", "--defense=toy", "--pruning_rate=30", "--max_iterations=1",
                             "--no_progress", f"--output={out}"]) == 0
    assert json.loads((out / "metrics.json").read_text())["defense"] == "toy"
    assert defense_params("shrink", pruning_rate=30) == {"rate": 30}
    with pytest.raises(ValueError, match="noise does not apply to defense 'shrink'"):
        defense_params("shrink", noise=0.1)
    g = (torch.ones(2),)
    assert torch.equal(get_defense("toy", rate=25)(None, None, None, g)[0], torch.full((2,), 0.75))


def test_a_registered_defense_is_a_grid_setting_with_its_own_folder(toy, tmp_path):
    grid = tmp_path / "toy.toml"
    grid.write_text('scale = "teaching"\nimages = [-1]\nseeds = [0]\n[defenses]\nnone = true\ntoy = [30, 60]\n'
                    '[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = 1\n'
                    f'[fedavg]\ndatasets = ["mnist"]\noutput = "{tmp_path / "fa"}"\n')
    loaded = load_grid(grid)
    settings = sorted({spec.setting for spec in loaded.reconstructions}, key=DefenseSetting.sort_key)
    assert [s.label() for s in settings] == ["none", "shrink 30%", "shrink 60%"]
    spec = next(s for s in loaded.reconstructions if s.setting.defense == "shrink")
    assert spec.setup().defense_params() == {"rate": spec.setting.value}
    assert {f.folder().name for f in loaded.fedavg} == {"mnist_none_none", "mnist_shrink_p30", "mnist_shrink_p60"}


def test_a_registered_defense_appears_in_the_summary_tables(toy, tmp_path):
    grid = tmp_path / "toy.toml"
    grid.write_text('scale = "teaching"\nimages = [-1]\nseeds = [0]\n[defenses]\nnone = true\ntoy = [30]\n'
                    '[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = 1\n')
    csv = tmp_path / "toy.csv"
    prepare(csv)
    for spec in load_grid(grid).reconstructions:
        append_row(csv, reconstruction_row(spec, "cpu", None, "test"))
    groups, accuracies = summarize(csv, tmp_path / "no-fedavg")
    assert [s.label() for s in groups[0].settings] == ["none", "shrink 30%"]
    text = render(groups, accuracies, csv, tmp_path / "no-fedavg", [], [])
    assert "| shrink 30% | " in text and "(n=1" in text
    figure = mse_against_rate(groups)
    assert "shrinking" in [t.get_text() for t in figure.legends[0].get_texts()]  # one legend below the panels
