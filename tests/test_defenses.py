from collections import OrderedDict

import pytest
import torch
from torch import nn

from soteria_lib.data import Normalization
from soteria_lib.defenses import get_defense, mask_statistics, soteria_scores
from soteria_lib.defenses.soteria import default_epsilon, plan_chunk
from soteria_lib.introspection import representation_fn, select_linear
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, loss_gradients, share_update


def _setup(shape=(3, 32, 32), batch=1, seed=0):
    torch.manual_seed(seed)
    model = get_model("lenet", shape)
    inputs, labels = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))
    return model, inputs, labels, loss_gradients(model, inputs, labels)


def _loop_scores(model, inputs, epsilon):
    """The published rule, the reference for the fast paths: one forward pass of the batch, then
    one backward pass per feature i with the cotangent e_i on every sample (in eval mode the
    samples are independent, so sample b's input gradient is its own Jacobian row). A feature
    that is exactly zero with a zero input gradient scores 0 (not 0/0)."""
    x = inputs.clone().requires_grad_(True)
    r = representation_fn(model, select_linear(model)[1])(x)
    scores = []
    for i in range(r.shape[1]):
        norms = torch.autograd.grad(r[:, i].sum(), x, retain_graph=True)[0].flatten(1).norm(dim=1)
        zero = (norms == 0) & (r[:, i] == 0)
        scores.append(torch.where(zero, 0.0, norms / (r[:, i].abs() + epsilon)).sum())
    return torch.stack(scores).detach()


def _weight_index(model, linear):
    return [p is linear.weight for p in model.parameters()].index(True)


@pytest.mark.parametrize("name, params", [
    ("soteria", {"pruning_rate": 0}), ("ours", {"pruning_rate": 0}), ("prune", {"pruning_rate": 0}),
    ("none", {}), ("dp-gaussian", {"sigma": 0}), ("dp-laplace", {"scale": 0}),
])
def test_rate_zero_is_the_identity(name, params):
    model, inputs, labels, grads = _setup()
    out = get_defense(name, **params)(model, inputs, labels, grads)
    assert len(out) == len(grads)
    for a, b in zip(out, grads):
        assert a is not b and torch.equal(a, b)


# Exactness of the fast paths against the per-feature loop: the sigmoid LeNet (epsilon 0) and
# the GS ConvNet (ReLU, epsilon 0.1, many exactly-zero features), here at width 8 for speed;
# bench/soteria_scores.py checks the published width 64 the same way.
_CASES = {"lenet": ("lenet", {}, 2), "convnet": ("convnet", {"width": 8}, 1)}  # (model, options, batch)


@pytest.fixture(scope="module", params=sorted(_CASES))
def exactness_case(request):
    name, options, batch = _CASES[request.param]
    torch.manual_seed(0)
    model = get_model(name, (3, 32, 32), **options).eval()
    inputs = torch.rand(batch, 3, 32, 32)
    epsilon = default_epsilon(model)
    return model, inputs, epsilon, _loop_scores(model, inputs, epsilon)


@pytest.mark.parametrize("method", ["loop", "batched"])
def test_soteria_scores_match_the_per_feature_loop(exactness_case, method):
    model, inputs, epsilon, reference = exactness_case
    fast = soteria_scores(model, inputs, epsilon=epsilon, method=method)
    torch.testing.assert_close(fast, reference, rtol=1e-6, atol=0)


def test_auto_method_batches_small_models_and_loops_large_ones_on_cpu():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    for name, options, expected in [("lenet", {}, 768), ("convnet", {"width": 64}, 0)]:
        model = get_model(name, (3, 32, 32), **options).eval()
        run = representation_fn(model, select_linear(model)[1])
        assert plan_chunk(model, run, x) == expected
        assert plan_chunk(model, run, x, "loop") == 0 and plan_chunk(model, run, x, "batched") >= 1


def test_relu_convnet_has_zero_features_and_finite_scores():
    torch.manual_seed(0)
    model = get_model("convnet", (3, 32, 32), width=8)
    scores = soteria_scores(model, torch.rand(1, 3, 32, 32))
    assert torch.isfinite(scores).all() and 0.2 < float((scores == 0).float().mean()) < 0.8
    assert model.training  # scored in eval mode, then restored


def test_zero_features_with_a_gradient_are_not_skipped():
    """r = x itself: a zero pixel is a zero feature whose Jacobian row is not zero, so the
    zero-feature shortcut must not apply; with epsilon = 0 its score is 1/0 and must raise."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    inputs = torch.tensor([0.0, 0.5, 0.0, 2.0, 0.0, 1.0]).reshape(1, 1, 2, 3)
    for method in ("loop", "batched"):
        scores = soteria_scores(model, inputs, epsilon=0.1, method=method)
        torch.testing.assert_close(scores, 1 / (inputs.flatten().abs() + 0.1))
    with pytest.raises(FloatingPointError, match="epsilon"):
        soteria_scores(model, inputs, epsilon=0.0)


@pytest.mark.parametrize("rate", [10, 60, 80])
def test_soteria_zeroes_exactly_the_pruned_columns(rate):
    model, inputs, labels, grads = _setup(batch=2)
    defense = get_defense("soteria", pruning_rate=rate)
    keep = defense.mask(model, inputs)
    out = defense(model, inputs, labels, grads)
    scores = soteria_scores(model, inputs, epsilon=0.0)
    threshold = torch.quantile(scores.double(), rate / 100).float()
    torch.testing.assert_close(keep, scores >= threshold)
    expected_pruned = round(rate / 100 * scores.numel())
    assert abs(int((~keep).sum()) - expected_pruned) <= 1
    weight_index = _weight_index(model, model.fc)
    for i, (a, b) in enumerate(zip(out, grads)):
        if i == weight_index:
            assert torch.equal(a[:, keep], b[:, keep])
            assert torch.count_nonzero(a[:, ~keep]) == 0
        else:
            assert torch.equal(a, b), f"tensor {i} is not the defended layer's weight but changed"


def _two_linear_model():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(nn.Conv2d(1, 3, 3), nn.Sigmoid(), nn.Flatten())),
        ("hidden", nn.Linear(3 * 6 * 6, 16)), ("act", nn.Sigmoid()), ("head", nn.Linear(16, 4)),
    ]))


@pytest.mark.parametrize("layer, width", [(None, 16), ("head", 16), ("hidden", 108)])
def test_any_model_and_any_named_linear_layer(layer, width):
    """No layer called fc: the default is the last nn.Linear ('head'); 'hidden' defends the
    first one, whose input is the convolutional feature map. Only that layer's weight columns change."""
    model = _two_linear_model()
    inputs, labels = torch.rand(2, 1, 8, 8) - 0.3, torch.tensor([1, 3])
    grads = loss_gradients(model, inputs, labels)
    name, linear = select_linear(model, layer)
    assert name == (layer or "head")
    defense = get_defense("soteria", pruning_rate=50, layer=layer)
    keep = defense.mask(model, inputs)
    assert keep.shape == (width,) and 0 < int((~keep).sum()) <= width // 2
    out = defense(model, inputs, labels, grads)
    index = _weight_index(model, linear)
    for i, (a, b) in enumerate(zip(out, grads)):
        expected = b * keep.to(b.dtype).unsqueeze(0) if i == index else b
        assert torch.equal(a, expected), f"tensor {i}"


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
    stats = mask_statistics(scores, 100 * zero_fraction * 0.9)
    assert stats["pruned"] == 0 and stats["threshold"] == 0 and stats["zero_scores"] == zero_fraction
    stats = mask_statistics(scores, 100 * zero_fraction + 5)
    assert stats["pruned"] > stats["pruned_already_zero"] == int((scores == 0).sum())


@pytest.mark.parametrize("params, message", [
    ({"pruning_rate": 100}, "pruning_rate"), ({"pruning_rate": -1}, "pruning_rate"),
    ({"pruning_rate": 10, "epsilon": -0.1}, "epsilon"), ({"pruning_rate": 10, "method": "fast"}, "method"),
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


@pytest.mark.parametrize("name, params", [
    ("soteria", {"pruning_rate": 70}), ("prune", {"pruning_rate": 70}),
    ("dp-gaussian", {"sigma": 0.1, "clip": 1.0}), ("dp-laplace", {"scale": 0.1, "clip": 1.0}),
])
def test_defenses_leave_their_inputs_untouched(name, params):
    model, inputs, labels, grads = _setup()
    before = [g.clone() for g in grads]
    out = get_defense(name, **params)(model, inputs, labels, grads)
    assert all(torch.equal(a, b) for a, b in zip(before, grads))
    assert not any(a is b for a, b in zip(out, grads))


def test_shared_update_carries_the_defended_gradient_and_no_data():
    model, inputs, labels, grads = _setup()
    update = share_update(model, PrivateBatch(inputs, labels), Normalization.identity(3),
                          get_defense("soteria", pruning_rate=50))
    assert update.metadata.batch_size == 1 and update.metadata.input_shape == (3, 32, 32)
    assert int((update.gradients[-2].abs().sum(0) == 0).sum()) == 384
    assert not any(v is inputs or v is labels for v in vars(update).values())


@pytest.mark.parametrize("name, params", [("none", {}), ("soteria", {"pruning_rate": 40}),
                                          ("prune", {"pruning_rate": 40}), ("dp-gaussian", {"sigma": 0.1}),
                                          ("dp-laplace", {"scale": 0.1})])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_defenses_refuse_non_finite_gradients(name, params, bad):
    """A NaN would otherwise move pruning's threshold or pass through as a shared number."""
    torch.manual_seed(0)
    model = get_model("lenet", (1, 28, 28))
    x, y = torch.rand(1, 1, 28, 28), torch.tensor([3])
    gradients = list(loss_gradients(model, x, y))
    gradients[0] = gradients[0].clone()
    gradients[0][0, 0, 0, 0] = bad
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        get_defense(name, **params)(model, x, y, tuple(gradients))


def test_soteria_reuses_its_norms_only_for_the_same_model_and_image(monkeypatch):
    """The sweep runs every rate and attacker on one model and image one after another: the
    Jacobian norms are computed once for them, and again as soon as a weight or a pixel changes."""
    from soteria_lib.defenses import soteria as module

    calls = []
    original = module._sample_norms
    monkeypatch.setattr(module, "_sample_norms", lambda *args: calls.append(1) or original(*args))
    torch.manual_seed(0)
    model = get_model("lenet", (1, 28, 28)).eval()
    x = torch.rand(1, 1, 28, 28)
    soteria_scores(model, x)
    soteria_scores(model, x)
    assert len(calls) == 2  # off by default: timing code measures the computation
    calls.clear()
    monkeypatch.setattr(module, "_RECENT_SIZE", 0)  # both restored after the test
    monkeypatch.setattr(module, "_RECENT", OrderedDict())
    module.keep_recent_norms(4)
    first = soteria_scores(model, x)
    again = soteria_scores(model, x.clone())
    assert torch.equal(first, again) and len(calls) == 1
    with torch.no_grad():
        next(model.parameters())[0, 0, 0, 0] += 1e-3
    assert not torch.equal(soteria_scores(model, x), first) and len(calls) == 2
    x[0, 0, 0, 0] += 1e-3
    soteria_scores(model, x)
    assert len(calls) == 3
    relu = get_model("lenet", (1, 28, 28), activation="relu").eval()
    relu.load_state_dict(model.state_dict())  # the same bytes, another network
    assert not torch.equal(soteria_scores(relu, x), soteria_scores(model, x)) and len(calls) == 4
