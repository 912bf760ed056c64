import pytest
import torch
from torch import nn

from soteria_lib.bounds import (global_lipschitz, local_lipschitz, operator_norm, reconstruction_bound,
                                representation_distance)
from soteria_lib.defenses import get_defense
from soteria_lib.leakage import true_representation
from soteria_lib.models import get_model


@pytest.mark.parametrize("shape", [(10, 40), (64, 64), (7, 300)])
def test_power_iteration_matches_the_dense_spectral_norm(shape):
    torch.manual_seed(0)
    layer = nn.Linear(shape[1], shape[0])
    exact = torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2).item()
    assert operator_norm(layer, (shape[1],)) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 2), (1, 0)])
def test_power_iteration_matches_a_direct_convolution_jacobian(stride, padding):
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, kernel_size=3, stride=stride, padding=padding)
    shape = (2, 9, 9)
    jacobian = torch.autograd.functional.jacobian(
        lambda x: nn.functional.conv2d(x, conv.weight.detach().double(), None, stride, padding).flatten(),
        torch.zeros(1, *shape, dtype=torch.float64)).reshape(-1, 2 * 81)
    exact = torch.linalg.matrix_norm(jacobian, ord=2).item()
    assert operator_norm(conv, shape) == pytest.approx(exact, rel=1e-6)


def _relu_net():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, 10))
    with torch.no_grad():  # non-trivial eval-mode statistics
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("build, shape", [
    (lambda: get_model("lenet", (1, 28, 28)), (1, 28, 28)),
    (_relu_net, (1, 14, 14)),
])
def test_global_bound_is_never_below_the_local_estimate(build, shape):
    model = build()
    certified = global_lipschitz(model, shape)
    for seed in range(3):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
        assert local_lipschitz(model, x) <= certified * (1 + 1e-6)


def test_local_estimate_matches_the_full_jacobian():
    model = get_model("lenet", (1, 28, 28))
    x = torch.rand(1, 28, 28)
    from soteria_lib.introspection import representation_fn
    run = representation_fn(model, model.fc)
    jacobian = torch.autograd.functional.jacobian(lambda v: run(v.unsqueeze(0))[0], x).reshape(588, -1)
    exact = torch.linalg.matrix_norm(jacobian.double(), ord=2).item()
    assert local_lipschitz(model, x) == pytest.approx(exact, rel=1e-5)


def test_bound_grows_with_the_pruning_rate_and_vanishes_at_zero():
    torch.manual_seed(3)
    model = get_model("lenet", (1, 28, 28))
    x = torch.rand(1, 1, 28, 28)
    r = true_representation(model, x)[0]
    lipschitz = global_lipschitz(model, (1, 28, 28))
    distances = []
    for rate in (0, 20, 50, 80):
        keep = get_defense("soteria", pruning_rate=rate).mask(model, x)
        bound = reconstruction_bound(r, keep, lipschitz, dimension=784)
        assert bound["distance"] == pytest.approx(representation_distance(r, keep) / lipschitz)
        distances.append(bound["distance"])
    assert distances[0] == 0 and all(a < b for a, b in zip(distances, distances[1:]))


def test_unknown_layers_are_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    with pytest.raises(TypeError, match="no Lipschitz rule for GELU"):
        global_lipschitz(model, (1, 28, 28))
