from dataclasses import replace

import pytest
import torch
from torch import nn

from soteria_lib.convergence import (constants, li_bound, masked_bound, run_surrogate_fedavg,
                                     surrogate_from_model, variance_term)
from soteria_lib.data import load_dataset
from soteria_lib.federated import split_dirichlet


@pytest.fixture(scope="module")
def surrogate(data_root):
    data = load_dataset("mnist", data_root, train=True)
    images, labels = data.images[:160].float() / 255, data.labels[:160]
    torch.manual_seed(0)
    extractor = nn.Sequential(nn.Conv2d(1, 4, 5, stride=4), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    return surrogate_from_model(extractor, images, labels, split_dirichlet(labels, 4, 0.5, seed=0), l2=0.01)


@pytest.fixture(scope="module")
def base_constants(surrogate):
    return constants(surrogate, batch_size=8, local_steps=1)


@pytest.mark.parametrize("local_steps", [1, 4])
@pytest.mark.parametrize("rate", [None, 60])
def test_bound_lies_above_the_measured_gap_at_every_round(surrogate, base_constants, local_steps, rate):
    c = replace(base_constants, local_steps=local_steps)
    run = run_surrogate_fedavg(surrogate, c, rounds=30, batch_size=8, pruning_rate=rate, seed=1)
    B = variance_term(surrogate, c, run["w_max"])
    bound = masked_bound(c, B, run["eps2"]) if rate else li_bound(c, B, 30)
    assert len(bound) == len(run["gaps"]) == 31
    assert all(gap >= -1e-9 for gap in run["gaps"]), "F* must be the minimum"
    assert all(b >= gap for b, gap in zip(bound, run["gaps"]))
    assert run["gaps"][-1] < run["gaps"][0], "FedAvg makes progress on the surrogate"
    assert (max(run["eps2"]) > 0) == (rate is not None)


def test_constants_are_consistent(surrogate, base_constants):
    c = base_constants
    assert c.L > c.mu == 0.01 and c.Gamma >= 0 and c.gamma >= 8 * c.kappa
    assert c.step_size(1) <= 1 / (4 * c.L)  # the theorem's step-size condition
    # the minimiser has zero gradient
    assert float(surrogate.gradient(c.w_star, torch.arange(len(surrogate.labels))).norm()) < 1e-6
