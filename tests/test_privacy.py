"""DP-SGD (per-example clipping and noise) and its (epsilon, delta) from Opacus's accountant."""
import importlib
import math
import os
import sys

import pytest
import torch

from soteria_lib.defenses import get_defense
from soteria_lib.defenses.dpsgd import clipped_sum, per_example_gradients
from soteria_lib.models import get_model
from soteria_lib.threat import loss_gradients

if os.environ.get("CI"):
    importlib.import_module("opacus")  # CI installs the extras: a missing Opacus fails there
else:
    pytest.importorskip("opacus", reason="the privacy extra is not installed (pip install 'soteria-lib[privacy]')")

from soteria_lib import privacy  # noqa: E402


@pytest.fixture
def batch():
    torch.manual_seed(0)
    model = get_model("lenet", (1, 28, 28), activation="relu", init="default")
    inputs, labels = torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])
    return model, inputs, labels, loss_gradients(model, inputs, labels)


def test_per_example_gradients_average_to_the_batch_gradient(batch):
    model, inputs, labels, gradients = batch
    for per, whole in zip(per_example_gradients(model, inputs, labels), gradients):
        assert per.shape == (6, *whole.shape)
        torch.testing.assert_close(per.mean(0), whole, rtol=1e-5, atol=1e-7)  # float32 sums in another order


def test_without_noise_and_with_a_clip_no_example_reaches_dp_sgd_is_the_batch_gradient(batch):
    model, inputs, labels, gradients = batch
    out = get_defense("dp-sgd", noise_multiplier=0.0, clip=1e6)(model, inputs, labels, gradients)
    for a, b in zip(out, gradients):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_one_example_moves_the_clipped_sum_by_at_most_the_clip(batch):
    model, inputs, labels, _ = batch
    clip = 0.05
    full = clipped_sum(per_example_gradients(model, inputs, labels), clip)
    fewer = clipped_sum(per_example_gradients(model, inputs[1:], labels[1:]), clip)
    change = math.sqrt(sum(float(((a - b).double() ** 2).sum()) for a, b in zip(full, fewer)))
    assert 0.99 * clip <= change <= clip * (1 + 1e-5)  # every example's gradient is far above 0.05: clipped


def test_the_noise_has_standard_deviation_z_c_over_b(batch):
    model, inputs, labels, gradients = batch
    z, clip = 2.0, 0.5
    quiet = get_defense("dp-sgd", noise_multiplier=0.0, clip=clip)(model, inputs, labels, gradients)
    noisy = get_defense("dp-sgd", noise_multiplier=z, clip=clip, seed=3)(model, inputs, labels, gradients)
    noise = torch.cat([(a - b).flatten() for a, b in zip(noisy, quiet)])
    assert noise.numel() > 10_000 and float(noise.std()) == pytest.approx(z * clip / 6, rel=0.03)  # 17,038 entries: 3 % is over 5 standard errors


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="noise_multiplier"):
        get_defense("dp-sgd", noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="clip"):
        get_defense("dp-sgd", noise_multiplier=1.0, clip=0.0)


def test_epsilon_grows_with_steps_and_rate_and_falls_with_noise():
    base = privacy.dp_sgd_epsilon(1.0, 0.01, 1000)
    assert 0 < base < math.inf
    assert privacy.dp_sgd_epsilon(1.0, 0.01, 4000) > base
    assert privacy.dp_sgd_epsilon(1.0, 0.05, 1000) > base
    assert privacy.dp_sgd_epsilon(2.0, 0.01, 1000) < base
    assert privacy.dp_sgd_epsilon(0.0, 0.01, 1000) == math.inf  # no noise: no guarantee
    assert privacy.dp_sgd_epsilon(1.0, 0.01, 0) == 0.0
    with pytest.raises(ValueError):
        privacy.dp_sgd_epsilon(1.0, 0.0, 10)


def test_one_full_batch_gaussian_step_agrees_with_the_classical_bound():
    # q = 1, one step: the Gaussian mechanism. The classical (epsilon, delta) calibration
    # z = sqrt(2 ln(1.25/delta)) / epsilon (Dwork and Roth, valid for epsilon < 1) must be at
    # least as loose as the accountant's: at that z, the accountant's epsilon is below epsilon.
    delta, epsilon = 1e-5, 0.5
    z = math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    assert privacy.dp_sgd_epsilon(z, 1.0, 1, delta) < epsilon


def test_the_federation_is_charged_for_its_worst_client():
    budget = privacy.fedavg_budget([600, 600, 200], rounds=5, local_epochs=1, batch_size=8, noise_multiplier=1.0)
    alone = privacy.dp_sgd_epsilon(1.0, 8 / 200, 5 * 25)
    assert budget.examples == 200 and budget.steps == 125 and budget.epsilon == pytest.approx(alone)


def test_a_missing_opacus_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opacus.accountants", None)
    with pytest.raises(privacy.OpacusMissing, match=r"soteria-lib\[privacy\]"):
        privacy.dp_sgd_epsilon(1.0, 0.1, 10)


def test_fedavg_trains_with_dp_sgd_and_records_the_worst_clients_budget():
    from soteria_lib.federated import FedAvgConfig, FedAvgExperiment, privacy_budget, run_fedavg

    torch.manual_seed(0)
    config = FedAvgConfig(clients=3, fraction=1.0, rounds=2, batch_size=4, seed=0)
    inputs, labels = torch.rand(30, 1, 28, 28), torch.arange(30) % 10
    model = get_model("lenet", (1, 28, 28), activation="relu", init="default")
    experiment = FedAvgExperiment(defense="dp-sgd", defense_settings={"noise_multiplier": 1.0, "clip": 1.0}, training=config)
    history = run_fedavg(model, (inputs, labels), (inputs, labels), config, experiment.build_defense(),
                         progress=False)
    assert len(history) == 3 and all(math.isfinite(h["loss"]) for h in history)
    budget = privacy_budget(experiment, labels)
    # three IID clients of 10 examples, every client in both rounds (fraction 1): each example is in
    # one shuffled batch per epoch, so 2 Gaussian mechanisms, no amplification by subsampling
    assert (budget["steps"], budget["sample_rate"], budget["examples"]) == (2, 1.0, 10)
    assert budget["epsilon"] == pytest.approx(privacy.dp_sgd_epsilon(1.0, 1.0, 2))


def test_the_ledger_charges_only_the_rounds_a_client_joined():
    from soteria_lib.federated import FedAvgConfig, FedAvgExperiment, client_parts, privacy_budget, round_plan

    config = FedAvgConfig(clients=10, fraction=0.3, rounds=4, batch_size=2, local_epochs=2, seed=3)
    labels = torch.arange(100) % 10
    budget = privacy_budget(FedAvgExperiment(defense="dp-sgd", defense_settings={"noise_multiplier": 1.0},
                                             training=config), labels)
    sizes = [len(p) for p in client_parts(labels, config)]
    joined = [sum(k in dict(round_plan(config, t, sizes)) for t in range(1, 5)) for k in range(10)]
    assert max(joined) < 4  # three clients a round: nobody joins all four rounds here
    assert budget["steps"] == 2 * max(joined)
    assert budget["epsilon"] == pytest.approx(privacy.dp_sgd_epsilon(1.0, 1.0, 2 * max(joined)))
    assert privacy_budget(FedAvgExperiment(defense="dp-gaussian", defense_settings={"sigma": 0.1}, training=config), labels) is None


def test_the_summary_shows_epsilon_beside_each_noise_setting(tmp_path):
    import json

    from soteria_lib.defenses import DefenseSetting
    from soteria_lib.sweep.grid import FedAvgSpec
    from soteria_lib.sweep.report import accuracy_section
    from soteria_lib.sweep.accuracy import read_accuracies

    for setting, privacy_record in ((DefenseSetting("dp-sgd", 1.0), {"epsilon": 2.5, "delta": 1e-5}),
                                    (DefenseSetting("dp-gaussian", 0.1), None), (DefenseSetting("soteria", 60.0), None)):
        spec = FedAvgSpec("mnist", setting, "teaching", tmp_path, {}, 0)
        spec.folder().mkdir(parents=True)
        (spec.folder() / "metrics.json").write_text(json.dumps({**spec.experiment().identity(), "final_accuracy": 0.9,
                                                                "privacy": privacy_record}))
    accuracies = read_accuracies(tmp_path)
    epsilon = {setting.defense: a.epsilon for (_, setting), a in accuracies.items()}
    assert epsilon == {"dp-sgd": 2.5, "dp-gaussian": math.inf, "soteria": None}
    text = "\n".join(accuracy_section(accuracies))
    assert "| 2.5 |" in text and "∞ (nothing clipped per example)" in text
