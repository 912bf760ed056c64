"""Soteria in a Flower federation: the same rounds as our FedAvg loop, and a curious server.

The federations run on the session's own Ray head on 127.0.0.1 (``ray_head`` in conftest.py).
Where Flower is not installed the tests skip, saying so, except in CI, which installs the extras.
"""
import importlib
import os

import pytest
import torch

if os.environ.get("CI"):
    importlib.import_module("flwr")  # CI installs the extras: a missing Flower fails there
else:
    pytest.importorskip("flwr", reason="the flower extra is not installed (pip install 'soteria-lib[flower]')")

from soteria_lib.curious_server import CuriousServer, score, update_as_gradient  # noqa: E402
from soteria_lib.data import dataset_info  # noqa: E402
from soteria_lib.federated import FedAvgConfig, FedAvgExperiment, local_sgd, run_fedavg  # noqa: E402
from soteria_lib.flower import Federation, client_data, client_defense, run_flower  # noqa: E402
from soteria_lib.runtime import seed_everything  # noqa: E402
from soteria_lib.threat import PrivateBatch, share_update  # noqa: E402

NORMALIZATION = dataset_info("mnist").normalization


@pytest.fixture
def one_thread():
    """One torch thread here, as in every Flower client: the same kernels, so the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_flower_federation_repeats_our_fedavg_rounds_exactly(data_root, ray_head, one_thread):
    """Same seeds, same clients, same batches, same averaging order: on one machine every round's
    accuracy and loss are bit-equal (no tolerance needed; a different round would differ)."""
    experiment = FedAvgExperiment(dataset="mnist", defense="soteria", defense_settings={"pruning_rate": 60.0},
                                  training=FedAvgConfig(clients=4, fraction=0.5, rounds=2, batch_size=4, seed=3))
    federation = Federation(experiment, train_examples=240, data_root=str(data_root))
    seed_everything(experiment.training.seed)
    model = federation.model()
    ours = run_fedavg(model, federation.split(train=True), federation.split(train=False), experiment.training,
                      experiment.build_defense(), progress=False, normalization=NORMALIZATION)
    flower = run_flower(federation, address=ray_head)
    assert [(r["round"], r["accuracy"], r["loss"]) for r in flower["history"]] == \
        [(r["round"], r["accuracy"], r["loss"]) for r in ours]
    assert ours[-1]["accuracy"] > ours[0]["accuracy"] + 0.08  # it really trained (9 % -> 20 % here)
    assert flower["engine"].startswith("flwr ") and flower["train_examples"] == 240


def test_the_curious_server_rebuilds_an_undefended_client_and_fails_against_soteria(data_root, ray_head,
                                                                                     one_thread):
    """Four clients of one image each take one step (federated SGD): the server reads each
    client's gradient off its update and runs plain DLG at the teaching budget. L-BFGS is chaotic
    across machines, so the test asks what is promised: undefended images come back (median PSNR
    above 15 dB; about 22 dB here) and Soteria's do not (every one below 12 dB; about 7.5 here)."""
    psnr = {}
    for defense, rate in (("none", 0.0), ("soteria", 80.0)):
        experiment = FedAvgExperiment(dataset="mnist", defense=defense, defense_settings={"pruning_rate": rate} if rate else {},
                                      training=FedAvgConfig(clients=4, fraction=1.0, rounds=1, batch_size=1))
        federation = Federation(experiment, train_examples=4, data_root=str(data_root))
        curious = CuriousServer("dlg", scale="teaching")
        run_flower(federation, curious, address=ray_head)
        assert sorted(o.client for o in curious.observations) == [0, 1, 2, 3]
        assert all(o.steps == 1 and o.examples == 1 for o in curious.observations)
        psnr[defense] = [score(o, client_data(federation, o.client)[0], NORMALIZATION)["psnr"]
                         for o in curious.observations]
    assert sorted(psnr["none"])[1:3] and sum(sorted(psnr["none"])[1:3]) / 2 > 15, psnr
    assert max(psnr["soteria"]) < 12, psnr


def test_a_one_step_update_gives_back_the_shared_gradient(data_root, one_thread):
    """(w - w_k) / eta is the defended gradient the client shared: equal up to float32 rounding of
    the subtraction, and exactly zero in the columns Soteria pruned."""
    experiment = FedAvgExperiment(dataset="mnist", defense="soteria", defense_settings={"pruning_rate": 80.0},
                                  training=FedAvgConfig(clients=1, batch_size=1))
    federation = Federation(experiment, train_examples=1, data_root=str(data_root))
    inputs, labels = client_data(federation, 0)
    model = federation.model()
    shared = share_update(model, PrivateBatch(inputs, labels), NORMALIZATION, experiment.build_defense())
    local = federation.model()
    local.load_state_dict(model.state_dict())
    local_sgd(local, inputs, labels, experiment.training, experiment.build_defense(), torch.Generator(),
              NORMALIZATION)
    recovered = update_as_gradient(model, local.state_dict(), experiment.training.lr, 1)
    for sent, read in zip(shared.gradients, recovered):
        assert torch.allclose(read, sent, rtol=1e-3, atol=1e-5)
        assert torch.equal(read == 0, sent == 0) or sent.ndim != 2
    assert (recovered[-2] == 0).all(0).float().mean() >= 0.79  # 80 % of the defended columns


def test_noise_defenses_draw_anew_for_every_client_and_round():
    experiment = FedAvgExperiment(dataset="mnist", defense="dp-gaussian", defense_settings={"sigma": 0.1})
    model = Federation(experiment).model()
    grads = tuple(torch.zeros_like(p) for p in model.parameters())
    x, y = torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long)
    draws = [client_defense(experiment, r, k)(model, x, y, grads)[0] for r, k in ((1, 0), (1, 1), (2, 0), (1, 0))]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert torch.equal(draws[0], draws[3])  # seeded: the same client and round draw the same noise


def test_bad_federations_are_refused_in_one_line():
    with pytest.raises(ValueError, match="train_examples must be an integer >= 1"):
        Federation(FedAvgExperiment(), train_examples=0)
    with pytest.raises(ConnectionError, match="nothing answers at 127.0.0.1:1"):
        run_flower(Federation(FedAvgExperiment()), address="127.0.0.1:1")
