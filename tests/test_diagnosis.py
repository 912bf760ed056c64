"""A failed attack's diagnosis (issue 26, chapter 5 "Why the attackers fail against noise"): the
attacker's own objective, evaluated at any image, is the one its search minimised; the update a
results row attacked is rebuilt exactly from the row; a failed run that ended at or below the
private image's value is the objective's failure, one above it the optimiser's."""
import math

import pytest
import torch

from soteria_lib.attacks import get_attack
from soteria_lib.attacks.battery import attacker_info
from soteria_lib.attacks.dlg import objective_at
from soteria_lib.data import Normalization
from soteria_lib.defenses import DefenseSetting, get_defense
from soteria_lib.models import get_model
from soteria_lib.pipeline import client_round
from soteria_lib.sweep.diagnosis import diagnose, private_loss
from soteria_lib.sweep.specs import ReconstructionSpec
from soteria_lib.threat import PrivateBatch, share_update

SIGMOID = {"activation": "sigmoid", "init": "uniform"}
NOISE_AWARE = {**attacker_info("noise-aware").options, "infer_labels": True, "box": "sigmoid", "restarts": 2}


def _client(defense):
    torch.manual_seed(0)
    model = get_model("lenet", (1, 28, 28), **SIGMOID).eval()
    batch = PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([4]))
    return model, batch, share_update(model, batch, Normalization.identity(1), defense)


def test_the_objective_vanishes_at_the_private_image_only_without_noise():
    model, batch, clean = _client(get_defense("none"))
    assert objective_at(model, clean, batch.inputs, batch.labels, infer_labels=True) == 0
    _, _, noisy = _client(get_defense("dp-gaussian", sigma=0.01, seed=1))
    assert objective_at(model, noisy, batch.inputs, batch.labels, **NOISE_AWARE) > 0


def test_the_search_records_the_objective_objective_at_evaluates():
    model, _, noisy = _client(get_defense("dp-gaussian", sigma=0.01, seed=1))
    result = get_attack("dlg")(model, noisy, max_iterations=3, progress=False, **NOISE_AWARE)
    again = objective_at(model, noisy, result.inputs, result.labels, max_iterations=3, **NOISE_AWARE)
    assert again == pytest.approx(result.matching_loss, rel=1e-4)  # the same function, float32 rounding apart


@pytest.fixture(scope="module")
def noisy_row():
    """One real results row: noise-aware DLG, 3 steps, on the embedded digit (no dataset needed)."""
    spec = ReconstructionSpec("dlg", "mnist", "teaching", 3, "noise-aware", {"infer_labels": True, "box": "sigmoid"},
                              DefenseSetting("dp-gaussian", 0.01), target_id=-1, seed=2, model="lenet",
                              model_options=SIGMOID, input_space="pixels")
    return spec.row("cpu", None, "test")


def test_a_row_rebuilds_the_update_it_attacked(noisy_row):
    setup = ReconstructionSpec.from_row(noisy_row).setup()
    first, second = client_round(setup), client_round(setup)
    assert all(torch.equal(a, b) for a, b in zip(first.update.gradients, second.update.gradients))  # same noise
    loss = private_loss(noisy_row)
    assert loss > 0 and loss == objective_at(first.model, first.update, first.batch.inputs, first.batch.labels,
                                             setup.attack_config())


def test_the_diagnosis_tells_the_objective_from_the_optimiser(noisy_row):
    truth = private_loss(noisy_row)
    below = {**noisy_row, "psnr": 5.0, "matching_loss": truth / 2}  # ended on a better fit than the private image
    above = {**noisy_row, "psnr": 5.0, "matching_loss": truth * 2}  # the private image fits better: search failed
    rebuilt = {**noisy_row, "psnr": 30.0}
    d = diagnose([below, above, above, rebuilt], threshold=20.0)
    assert (d.failed, d.objective, d.optimiser) == (3, 1, 2)
    assert diagnose([rebuilt], threshold=20.0).failed == 0


@pytest.mark.parametrize("change", [{"attack": "gs"}, {"model_state": "round:5"}])
def test_only_dlg_on_initial_models_is_diagnosed(noisy_row, change):
    with pytest.raises(ValueError, match="only DLG runs on initial models"):
        private_loss({**noisy_row, **change})
