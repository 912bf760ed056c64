import pytest
import torch

from soteria_lib.attacks import get_attack
from soteria_lib.data import Normalization
from soteria_lib.pipeline import Setup, run_reconstruction
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, share_update

# Images and seeds fixed once; DLG's success depends on the random model and start (see notebook 02).
CIFAR = dict(dataset="cifar10", target_id=3, seed=1)
MNIST = dict(dataset="mnist", target_id=0, seed=1)


def _run(data_root, **kw):
    return run_reconstruction(Setup(attack="dlg", data_root=str(data_root), **kw), progress=False)


@pytest.fixture(scope="module")
def undefended_cifar(data_root):
    return _run(data_root, **CIFAR)


def test_undefended_dlg_recovers_a_cifar_image(undefended_cifar):
    metrics = undefended_cifar.metrics
    assert metrics["mse"] < 1e-3 and metrics["label_correct"]
    assert metrics["iterations"] == 100  # the teaching scale


def test_undefended_dlg_recovers_an_mnist_image(data_root):
    metrics = _run(data_root, **MNIST).metrics
    assert metrics["mse"] < 1e-3 and metrics["label_correct"]


def test_soteria_at_80_percent_raises_the_error_tenfold(data_root, undefended_cifar):
    defended = _run(data_root, defense="soteria", defense_settings={"pruning_rate": 80}, **CIFAR).metrics
    assert defended["mse"] >= 10 * undefended_cifar.metrics["mse"]


def test_ctrl_c_returns_the_best_result_so_far():
    torch.manual_seed(1)
    model = get_model("lenet", (1, 28, 28))
    batch = PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([4]))
    update = share_update(model, batch, Normalization.identity(1))
    calls = {"n": 0}
    original = model.forward

    def forward(x):
        calls["n"] += 1
        if calls["n"] > 60:
            raise KeyboardInterrupt
        return original(x)

    model.forward = forward
    result = get_attack("dlg")(model, update, max_iterations=50, seed=1, progress=False)
    assert result.interrupted and 0 < result.iterations < 50
    assert result.matching_loss == min(result.losses)
    assert result.inputs.shape == (1, 1, 28, 28)


def test_seeded_runs_repeat_exactly():
    torch.manual_seed(1)
    model = get_model("lenet", (1, 28, 28))
    update = share_update(model, PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([4])),
                          Normalization.identity(1))
    a = get_attack("dlg")(model, update, max_iterations=3, seed=5, progress=False)
    b = get_attack("dlg")(model, update, max_iterations=3, seed=5, progress=False)
    assert torch.equal(a.inputs, b.inputs) and a.losses == b.losses


def test_negative_iterations_are_refused():
    model = get_model("lenet", (1, 28, 28))
    update = share_update(model, PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([4])),
                          Normalization.identity(1))
    with pytest.raises(ValueError, match="max_iterations"):
        get_attack("dlg")(model, update, max_iterations=-1)


def test_batchnorm_in_train_mode_is_refused():
    torch.manual_seed(0)
    model = get_model("convnet", (1, 28, 28), width=2)
    update = share_update(model.eval(), PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([1])),
                          Normalization.identity(1))
    with pytest.raises(ValueError, match="eval mode"):
        get_attack("dlg")(model.train(), update, max_iterations=1, progress=False)


def test_an_attack_records_why_it_stopped():
    """Off by default (the whole budget runs); a loss target stops it as converged, a plateau as
    stalled, and the reason is part of the result."""
    torch.manual_seed(1)
    model = get_model("lenet", (1, 28, 28))
    update = share_update(model, PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([4])), Normalization.identity(1))
    dlg = get_attack("dlg")
    full = dlg(model, update, max_iterations=6, seed=1, progress=False)
    assert full.iterations == 6 and full.details["stop_reason"] == "budget"
    early = dlg(model, update, max_iterations=6, seed=1, progress=False, stop_loss=full.losses[2])
    assert early.details["stop_reason"] == "converged" and early.iterations <= 3
    assert early.losses == full.losses[:early.iterations]  # the same path, cut short
    stalled = dlg(model, update, max_iterations=50, seed=1, progress=False, patience=1, stop_loss=None)
    assert stalled.details["stop_reason"] in ("stalled", "budget")
    with pytest.raises(ValueError, match="patience"):
        dlg(model, update, max_iterations=1, patience=0, progress=False)


def test_the_pipeline_serves_the_oracle_start_the_private_image_and_only_when_asked(data_root):
    """``start="private"`` (chapter 5's diagnostic) begins at the client's image: with no defense and
    no step taken the result is that image; the attacker's own start is not."""
    runs = {start: _run(data_root, **MNIST, attack_options={"start": start, "max_iterations": 0, "box": "sigmoid"})
            for start in ("private", "random")}
    assert runs["private"].metrics["psnr"] > 60 and runs["private"].metrics["attack_config"]["start"] == "private"
    assert runs["random"].metrics["psnr"] < 15
