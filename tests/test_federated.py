import copy

import pytest
import torch

from soteria_lib.defenses import Defense
from soteria_lib.federated import FedAvgConfig, run_fedavg, split_dirichlet, split_iid
from soteria_lib.models import get_model
from soteria_lib.threat import loss_gradients


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _model(seed=0):
    torch.manual_seed(seed)
    return get_model("lenet", (1, 28, 28), init="default")


def test_one_client_one_full_batch_step_per_round_is_centralised_gradient_descent():
    x, y = _data()
    config = FedAvgConfig(clients=1, fraction=1.0, rounds=3, local_epochs=1, batch_size=len(y), lr=0.5)
    federated = _model()
    central = copy.deepcopy(federated)
    run_fedavg(federated, (x, y), (x, y), config, progress=False)
    for _ in range(3):
        grads = loss_gradients(central, x, y)
        with torch.no_grad():
            for p, g in zip(central.parameters(), grads):
                p.sub_(0.5 * g)
    for a, b in zip(federated.parameters(), central.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0])
def test_dirichlet_split_is_an_exact_partition(alpha):
    labels = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(1))
    parts = split_dirichlet(labels, 7, alpha, seed=3)
    joined = torch.cat(parts)
    assert len(parts) == 7 and torch.equal(joined.sort().values, torch.arange(1000))
    assert all(torch.equal(a, b) for a, b in zip(parts, split_dirichlet(labels, 7, alpha, seed=3)))  # seeded


def test_small_alpha_skews_the_labels():
    labels = torch.arange(2000) % 10
    skewed = split_dirichlet(labels, 5, 0.05, seed=0)
    even = split_dirichlet(labels, 5, 1000.0, seed=0)
    classes = lambda parts: sum(len(set(labels[p].tolist())) for p in parts if len(p))  # noqa: E731
    assert classes(skewed) < classes(even) == 50


def test_iid_split_is_an_exact_balanced_partition():
    parts = split_iid(103, 10, seed=0)
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(103))
    assert {len(p) for p in parts} == {10, 11}


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    x, y = _data(60)
    config = FedAvgConfig(clients=3, fraction=0.67, rounds=3, batch_size=10, lr=0.3, seed=4)
    straight = _model()
    expected = run_fedavg(straight, (x, y), (x, y), config, progress=False)

    def stop_after_first(record):
        if record["round"] == 1:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        run_fedavg(_model(), (x, y), (x, y), config, checkpoint=checkpoint, progress=False,
                   on_round=stop_after_first)
    resumed_model = _model()
    resumed = run_fedavg(resumed_model, (x, y), (x, y), config, checkpoint=checkpoint, progress=False)
    assert [h["accuracy"] for h in resumed] == [h["accuracy"] for h in expected]
    for a, b in zip(resumed_model.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="another configuration"):
        run_fedavg(_model(), (x, y), (x, y), FedAvgConfig(rounds=5), checkpoint=checkpoint, progress=False)


def test_a_finished_run_continued_with_more_rounds_is_the_longer_run(tmp_path):
    """What the verdict grid relies on where it raised CIFAR-10's rounds from 10 to 40: round t's
    clients and batch order depend on the seed and t, not on the round count, so a finished run's
    checkpoint with its round count raised continues into the longer run (a defense without
    randomness: a seeded defense's generator is not in the checkpoint)."""
    x, y = _data(60)
    short, long = (FedAvgConfig(clients=3, fraction=0.67, rounds=r, batch_size=10, lr=0.3, seed=4) for r in (2, 4))
    straight = _model()
    expected = run_fedavg(straight, (x, y), (x, y), long, progress=False)
    checkpoint = tmp_path / "ckpt.pt"
    run_fedavg(_model(), (x, y), (x, y), short, checkpoint=checkpoint, progress=False)
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["rounds"] = long.rounds
    torch.save(state, checkpoint)
    continued_model = _model()
    continued = run_fedavg(continued_model, (x, y), (x, y), long, checkpoint=checkpoint, progress=False)
    assert [h["accuracy"] for h in continued] == [h["accuracy"] for h in expected]
    for a, b in zip(continued_model.parameters(), straight.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("field, value", [("clients", 0), ("fraction", 0.0), ("fraction", 1.5),
                                          ("fraction", float("nan")), ("batch_size", 0), ("lr", -0.1),
                                          ("lr", float("inf")), ("alpha", 0.0), ("alpha", float("inf")),
                                          ("rounds", 2.5), ("seed", 2**32)])
def test_bad_configuration_is_refused(field, value):
    with pytest.raises(ValueError, match=field if field != "seed" else "a seed"):
        FedAvgConfig(**{field: value})


def test_every_local_step_applies_the_update_the_client_shares():
    """The FedAvg client goes through the client contract: what the defense returns is what moves
    the model. A defense that shares nothing leaves the global model where it was."""
    x, y = _data(20)
    seen = []

    class ShareNothing(Defense):  # not registered: an experiment of the test's own
        def on_update(self, model, inputs, labels, gradients):
            seen.append(len(inputs))
            return tuple(torch.zeros_like(g) for g in gradients)

    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    run_fedavg(model, (x, y), (x, y), FedAvgConfig(clients=2, fraction=1.0, rounds=1, batch_size=5), ShareNothing(),
               progress=False)
    assert seen == [5, 5, 5, 5]  # two clients of 10 examples, batches of 5
    for a, b in zip(model.parameters(), before):
        assert torch.equal(a, b)


def test_a_diverged_training_is_recorded_when_asked_and_raised_otherwise(tmp_path, data_root):
    """Laplace noise of scale 10 on every step blows the model up: the command line reports an
    error, while a sweep records the run with the round it diverged in."""
    from soteria_lib.federated import FedAvgDiverged, FedAvgExperiment, run_experiment

    experiment = FedAvgExperiment.with_options({"rounds": 2, "clients": 2, "fraction": 1.0, "lr": 1.0},
                                               dataset="mnist", defense="dp-laplace", defense_settings={"scale": 10.0})
    with pytest.raises(FedAvgDiverged, match="diverged in round 1"):
        run_experiment(experiment, None, "cpu", str(data_root), progress=False)
    result = run_experiment(experiment, tmp_path / "cell", "cpu", str(data_root), progress=False,
                            record_divergence=True)
    assert result["diverged_round"] == 1 and len(result["history"]) == 1
    assert result["final_accuracy"] == result["history"][-1]["accuracy"]
    assert (tmp_path / "cell" / "metrics.json").is_file()
