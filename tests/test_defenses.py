import pytest
import torch
from torch import nn

from soteria_lib.data import Normalization
from soteria_lib.defenses import get_defense, soteria_scores
from soteria_lib.defenses.soteria import representation_fn, select_linear
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, loss_gradients, share_update


def _setup(shape=(3, 32, 32), batch=1, seed=0):
    torch.manual_seed(seed)
    model = get_model("lenet", shape)
    inputs, labels = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))
    return model, inputs, labels, loss_gradients(model, inputs, labels)


def _loop_scores(model, inputs, epsilon):
    """The published rule, one backward pass per feature: the reference for the fast path."""
    run = representation_fn(model, select_linear(model)[1])
    total = None
    for x in inputs:
        x = x.unsqueeze(0).clone().requires_grad_(True)
        r = run(x)[0]
        scores = torch.stack([
            torch.autograd.grad(r[i], x, retain_graph=True)[0].norm() / (r[i].abs() + epsilon)
            for i in range(r.numel())
        ])
        total = scores if total is None else total + scores
    return total.detach()


@pytest.mark.parametrize("name", ["soteria", "ours", "prune", "none"])
def test_rate_zero_is_the_identity(name):
    model, inputs, labels, grads = _setup()
    params = {} if name == "none" else {"pruning_rate": 0}
    out = get_defense(name, **params)(model, inputs, labels, grads)
    assert len(out) == len(grads)
    for a, b in zip(out, grads):
        assert a is not b and torch.equal(a, b)


@pytest.mark.parametrize("batch", [1, 3])
def test_soteria_scores_match_the_per_feature_loop(batch):
    model, inputs, _, _ = _setup(batch=batch)
    fast = soteria_scores(model, inputs, epsilon=0.0)
    slow = _loop_scores(model, inputs, 0.0)
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=0)


@pytest.mark.parametrize("rate", [10, 60, 80])
def test_soteria_zeroes_exactly_the_pruned_columns(rate):
    model, inputs, labels, grads = _setup(batch=2)
    defense = get_defense("soteria", pruning_rate=rate)
    keep = defense.mask(model, inputs)
    out = defense(model, inputs, labels, grads)
    scores = _loop_scores(model, inputs, 0.0)
    threshold = torch.quantile(scores.double(), rate / 100).float()
    torch.testing.assert_close(keep, scores >= threshold)
    expected_pruned = round(rate / 100 * scores.numel())
    assert abs(int((~keep).sum()) - expected_pruned) <= 1
    weight_index = [p is model.fc.weight for p in model.parameters()].index(True)
    for i, (a, b) in enumerate(zip(out, grads)):
        if i == weight_index:
            assert torch.equal(a[:, keep], b[:, keep])
            assert torch.count_nonzero(a[:, ~keep]) == 0
        else:
            assert torch.equal(a, b), f"tensor {i} is not the defended layer's weight but changed"


def test_prune_zeroes_the_smallest_entries_of_each_tensor():
    model, inputs, labels, grads = _setup()
    out = get_defense("prune", pruning_rate=50)(model, inputs, labels, grads)
    for a, b in zip(out, grads):
        kept = a != 0
        assert abs(kept.float().mean().item() - 0.5) <= 1.0 / b.numel() + 1e-6
        assert b.abs()[kept].min() >= b.abs()[~kept].max()
        assert torch.equal(a[kept], b[kept])


def test_ties_at_the_threshold_are_kept():
    """With ReLU many features are exactly zero; a percentile landing on 0 prunes nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    inputs = torch.rand(1, 1, 28, 28) - 0.5
    scores = soteria_scores(model, inputs)
    zero_fraction = float((scores == 0).float().mean())
    assert 0.3 < zero_fraction < 0.9 and torch.isfinite(scores).all()
    keep = get_defense("soteria", pruning_rate=100 * zero_fraction * 0.9).mask(model, inputs)
    assert bool(keep.all())


@pytest.mark.parametrize("params, message", [
    ({"pruning_rate": 100}, "pruning_rate"), ({"pruning_rate": -1}, "pruning_rate"),
    ({"pruning_rate": 10, "epsilon": -0.1}, "epsilon"),
])
def test_bad_soteria_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        get_defense("soteria", **params)


def test_unknown_defense_and_layer():
    with pytest.raises(ValueError, match="unknown defense"):
        get_defense("magic")
    model, inputs, labels, grads = _setup()
    with pytest.raises(ValueError, match="no layer named"):
        get_defense("soteria", pruning_rate=10, layer="classifier")(model, inputs, labels, grads)
    with pytest.raises(ValueError, match="not nn.Linear"):
        get_defense("soteria", pruning_rate=10, layer="body.0")(model, inputs, labels, grads)


def test_defenses_leave_their_inputs_untouched():
    model, inputs, labels, grads = _setup()
    before = [g.clone() for g in grads]
    for name in ("soteria", "prune"):
        get_defense(name, pruning_rate=70)(model, inputs, labels, grads)
    assert all(torch.equal(a, b) for a, b in zip(before, grads))


def test_shared_update_carries_the_defended_gradient_and_no_data():
    model, inputs, labels, grads = _setup()
    update = share_update(model, PrivateBatch(inputs, labels), Normalization.identity(3),
                          get_defense("soteria", pruning_rate=50), "soteria")
    assert update.metadata.batch_size == 1 and update.metadata.input_shape == (3, 32, 32)
    assert int((update.gradients[-2].abs().sum(0) == 0).sum()) == 384
    assert not any(v is inputs or v is labels for v in vars(update).values())
