import pytest
import torch

from soteria_lib.attacks import get_attack
from soteria_lib.attacks import cosine_cost, l2_cost
from soteria_lib.attacks.gs import Objective, batch_restarts, milestones, total_variation
from soteria_lib.data import dataset_info
from soteria_lib.defenses import get_defense
from soteria_lib.pipeline import Setup, run_reconstruction
from soteria_lib.scales import SCALES
from soteria_lib.metrics import image_metrics
from soteria_lib.models import ConvNet, get_model
from soteria_lib.threat import PrivateBatch, share_update

CIFAR = dataset_info("cifar10")
# A fixed CIFAR-10 test image and seed for the teaching-scale runs (one attack run each).
TEACHING = dict(attack="gs", dataset="cifar10", target_id=0, seed=0)


def _small_update(width=4, shape=(3, 32, 32), seed=0, defense=None, disclose=True):
    """A narrow ConvNet and the shared update of one random image: fast enough for unit tests."""
    torch.manual_seed(seed)
    model = get_model("convnet", shape, width=width).eval()
    batch = PrivateBatch(torch.randn(1, *shape).clamp(-1.5, 1.5), torch.tensor([2]))
    norm = CIFAR.normalization if shape[0] == 3 else dataset_info("mnist").normalization
    return model, batch, share_update(model, batch, norm, defense, disclose_labels=disclose)


def test_convnet_is_the_published_architecture():
    model = get_model("convnet", (3, 32, 32))
    params = list(model.parameters())
    assert len(params) == 34 and params[-2] is model.fc.weight
    assert model.fc.in_features == 2304 and sum(p.numel() for p in params) == 2_904_970
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == \
        [64, 128, 128, 256, 256, 256, 256, 256]
    narrow = ConvNet((1, 28, 28), width=16).eval()
    assert narrow.fc.in_features == 64 * 9 and narrow(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_costs_and_prior():
    g = (torch.randn(3, 4), torch.randn(5))
    assert abs(float(cosine_cost(tuple(3 * t for t in g), g))) < 1e-6
    assert abs(float(cosine_cost(tuple(-t for t in g), g)) - 2) < 1e-6
    assert float(l2_cost(g, g)) == 0
    assert float(total_variation(torch.ones(1, 3, 8, 8))) == 0
    x = torch.zeros(1, 1, 2, 2)
    x[..., 0, 0] = 1  # one pixel differs from one horizontal and one vertical neighbour
    assert float(total_variation(x)) == pytest.approx(0.5 + 0.5)


def test_learning_rate_milestones_are_the_published_ones():
    assert milestones(24_000) == [8998, 14999, 21015]


def test_each_restart_gets_its_own_gradient():
    model, batch, update = _small_update()
    objective = Objective(model, update.gradients, batch.labels, "sim", 1e-4)
    x = torch.randn(3, 1, 3, 32, 32)
    batched, sequential = objective.batched(x), objective.sequential(x)
    for a, b in zip(batched, sequential):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-9)
    alone = objective.sequential(x[1:2])[0][0]
    torch.testing.assert_close(batched[0][1], alone, rtol=1e-4, atol=1e-9)


def test_batched_and_sequential_restarts_agree():
    model, _, update = _small_update()
    gs = get_attack("gs")
    a = gs(model, update, max_iterations=6, restarts=3, seed=4, batched=True, progress=False)
    b = gs(model, update, max_iterations=6, restarts=3, seed=4, batched=False, progress=False)
    torch.testing.assert_close(a.inputs, b.inputs, rtol=0, atol=1e-4)
    torch.testing.assert_close(torch.tensor(a.details["restart_matching_losses"]),
                               torch.tensor(b.details["restart_matching_losses"]), rtol=1e-4, atol=1e-6)
    assert a.details["best_restart"] == b.details["best_restart"]


def test_best_restart_is_the_lowest_final_matching_cost():
    model, _, update = _small_update()
    result = get_attack("gs")(model, update, max_iterations=3, restarts=4, progress=False)
    costs = result.details["restart_matching_losses"]
    assert result.details["restarts"] == 4 and len(costs) == 4
    assert result.matching_loss == min(costs) == costs[result.details["best_restart"]]


@pytest.mark.parametrize("options", [dict(cost_fn="l2"), dict(optimizer="sgd"), dict(optimizer="lbfgs"),
                                     dict(signed=False, tv=0.0), dict(infer_labels=True)])
def test_variants_run_and_stay_in_the_box(options):
    model, _, update = _small_update(shape=(1, 28, 28))
    result = get_attack("gs")(model, update, max_iterations=2, restarts=2, progress=False, **options)
    low, high = update.metadata.normalization.box(result.inputs[0])
    assert result.iterations == 2 and int(result.labels) == 2
    assert bool(((result.inputs >= low) & (result.inputs <= high)).all())


def test_adaptive_matching_is_exact_at_the_true_image_under_pruning():
    model, batch, update = _small_update(defense=get_defense("prune", pruning_rate=60))
    masks = tuple(g != 0 for g in update.gradients)
    x = batch.inputs.unsqueeze(0)
    plain = Objective(model, update.gradients, batch.labels, "sim", 0.0).batched(x)[2]
    adaptive = Objective(model, update.gradients, batch.labels, "sim", 0.0, masks).batched(x)[2]
    assert float(adaptive) < 1e-5 < float(plain)
    result = get_attack("gs")(model, update, max_iterations=1, adaptive=True, progress=False)
    assert result.iterations == 1


def test_labels_must_be_disclosed_or_inferred():
    model, _, update = _small_update(disclose=False)
    with pytest.raises(ValueError, match="infer_labels"):
        get_attack("gs")(model, update, max_iterations=1, progress=False)
    assert int(get_attack("gs")(model, update, max_iterations=1, infer_labels=True, progress=False).labels) == 2


@pytest.mark.parametrize("options, needle", [(dict(restarts=0), "restarts"), (dict(cost_fn="cos"), "cost_fn"),
                                             (dict(optimizer="rmsprop"), "optimizer"), (dict(tv=-1.0), "tv")])
def test_bad_options_are_refused(options, needle):
    model, _, update = _small_update()
    with pytest.raises(ValueError, match=needle):
        get_attack("gs")(model, update, max_iterations=1, progress=False, **options)


def test_train_mode_batchnorm_is_refused():
    model, _, update = _small_update()
    with pytest.raises(ValueError, match="eval"):
        get_attack("gs")(model.train(), update, max_iterations=1, progress=False)


def test_ctrl_c_keeps_the_current_best_restart(monkeypatch):
    model, _, update = _small_update()
    calls = {"n": 0}
    original = ConvNet.forward

    def forward(self, x):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(ConvNet, "forward", forward)
    result = get_attack("gs")(model, update, max_iterations=50, restarts=2, progress=False)
    assert result.interrupted and 0 < result.iterations < 50 and len(result.losses) == result.iterations
    low, high = update.metadata.normalization.box(result.inputs[0])
    assert bool(((result.inputs >= low) & (result.inputs <= high)).all())
    assert result.matching_loss == min(result.details["restart_matching_losses"])


@pytest.fixture(scope="module")
def undefended(data_root):
    return run_reconstruction(Setup(data_root=str(data_root), **TEACHING), progress=False, frame_every=10**6)


def test_undefended_gs_gains_6_db_over_its_random_start(undefended):
    norm = undefended.update.metadata.normalization
    truth = norm.normalize(undefended.target.image).unsqueeze(0)
    start = image_metrics(undefended.reconstruction.frames[0][1], truth, norm)
    metrics = undefended.metrics
    assert undefended.reconstruction.frames[0][0] == 0
    assert metrics["psnr"] >= start["psnr"] + 6, (start["psnr"], metrics["psnr"])
    assert metrics["model"] == "convnet" and metrics["model_options"] == {"width": 16}
    assert metrics["iterations"] == SCALES["teaching"].attacks["gs"].iterations and metrics["label_correct"]


def test_soteria_at_60_percent_raises_the_error(data_root, undefended):
    defended = run_reconstruction(Setup(data_root=str(data_root), defense="soteria", defense_settings={"pruning_rate": 60}, **TEACHING),
                                  progress=False).metrics
    assert defended["mse"] > undefended.metrics["mse"]
    assert defended["mse_normalized"] > undefended.metrics["mse_normalized"]


def test_gs_records_why_it_stopped():
    model, _, update = _small_update()
    gs = get_attack("gs")
    full = gs(model, update, max_iterations=5, progress=False)
    assert full.iterations == 5 and full.details["stop_reason"] == "budget"
    early = gs(model, update, max_iterations=5, progress=False, stop_loss=full.losses[1])
    assert early.details["stop_reason"] == "converged" and early.iterations == 2
    assert early.losses == full.losses[:2]


def test_the_evaluation_path_is_chosen_by_measurement():
    """One restart: the plain path (faster than vmap on every device we measured). Several: vmap
    on a GPU, and on a CPU only for models small enough to gain (bench/gs_restarts.py)."""
    cpu = torch.device("cpu")
    small, large = get_model("convnet", (3, 32, 32), width=4), get_model("convnet", (3, 32, 32), width=64)
    assert not batch_restarts(small, 1, cpu) and batch_restarts(small, 4, cpu) and not batch_restarts(large, 4, cpu)
    assert batch_restarts(large, 4, torch.device("cuda")) and not batch_restarts(large, 1, torch.device("cuda"))
    model, _, update = _small_update()
    assert get_attack("gs")(model, update, max_iterations=1, restarts=2, progress=False).details["batched"]
    assert not get_attack("gs")(model, update, max_iterations=1, progress=False).details["batched"]
