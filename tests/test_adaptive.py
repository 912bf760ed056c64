import json
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from soteria_lib.attacks.base import visible_masks
from soteria_lib.attacks.dlg import gradient_distance, soft_cross_entropy
from soteria_lib.data import Normalization
from soteria_lib.defenses import get_defense
from soteria_lib.experiment import Setup, run_reconstruction
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, share_update


def test_the_mask_is_visible_and_the_true_image_matches_only_when_it_is_applied():
    """Soteria's pruned columns are exact zeros in the update, so the server reads the mask off.
    With it applied to the dummy gradient, the private image matches the update exactly (a
    global minimum of the adaptive objective); without it, the private image does not."""
    torch.manual_seed(1)
    model = get_model("lenet", (1, 28, 28))
    batch = PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([4]))
    defense = get_defense("soteria", pruning_rate=60)
    update = share_update(model, batch, Normalization.identity(1), defense, "soteria")
    masks = visible_masks(update)
    keep = defense.mask(model, batch.inputs)
    assert torch.equal(masks[-2], keep.expand_as(masks[-2]))  # the defended weight: pruned columns
    assert all(bool(m.all()) for i, m in enumerate(masks) if i != len(masks) - 2)  # nothing else

    loss = soft_cross_entropy(model(batch.inputs), F.one_hot(batch.labels, 10).float())
    truth = torch.autograd.grad(loss, list(model.parameters()))
    plain = gradient_distance(truth, update.gradients)
    adaptive = gradient_distance(tuple(g * m for g, m in zip(truth, masks)), update.gradients)
    assert float(adaptive) == 0.0 and float(plain) > 0.0


# A fixed image and seed (the MNIST image of tests/test_dlg.py), 20 L-BFGS steps, Soteria at 60 %.
SETUP = dict(attack="dlg", dataset="mnist", target_id=0, seed=1, defense="soteria", pruning_rate=60,
             max_iterations=20)


def test_adaptive_dlg_recovers_what_plain_dlg_loses_under_soteria(data_root):
    plain = run_reconstruction(Setup(**SETUP, data_root=str(data_root)), progress=False).metrics
    adaptive = run_reconstruction(Setup(**SETUP, adaptive=True, data_root=str(data_root)), progress=False).metrics
    assert plain["mse"] > 1.0  # plain DLG is broken by the defense
    assert adaptive["mse"] < 1e-4 and adaptive["label_correct"]  # the adaptive attacker is not
    assert adaptive["adaptive"] and not plain["adaptive"]


def test_cli_flags_reach_the_run(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "soteria_lib.reconstruct", "--attack=dlg", "--defense=dp-laplace",
                           "--noise=0.01", "--clip=5", "--adaptive", "--max_iterations=2", "--no_progress",
                           f"--output={out}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["defense"], metrics["noise"], metrics["clip"], metrics["adaptive"]) == ("dp-laplace", 0.01, 5, True)


@pytest.mark.parametrize("args, needle", [
    (["--defense=dp-gaussian", "--noise=-1"], "sigma"),
    (["--defense=dp-laplace", "--noise=0.1", "--clip=0"], "clip"),
    (["--defense=soteria", "--pruning_rate=10", "--noise=0.1"], "noise and clip"),
])
def test_bad_noise_flags_are_one_line_errors(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "soteria_lib.reconstruct", "--attack=dlg", *args, "--no_progress",
                           f"--output={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
