"""Soteria in a Flower federation: the two Flower Apps of flower_apps/, run with `flwr run` on a
SuperLink of the test session's own (soteria_lib.flower_run.LocalSuperLink), and the pieces a
Flower user drops into their own app (the defense mod, the curious strategy).

Where Flower is not installed the tests skip, saying so, except in CI, which installs the extras.
"""
import importlib
import os
import tomllib

import pytest
import torch

if os.environ.get("CI"):
    importlib.import_module("flwr")  # CI installs the extras: a missing Flower fails there
else:
    pytest.importorskip("flwr", reason="the flower extra is not installed (pip install 'soteria-lib[flower]')")

from flwr.app import Context, RecordDict  # noqa: E402

from soteria_lib.book_files import book_file  # noqa: E402
from soteria_lib.curious_server import score, update_as_gradient  # noqa: E402
from soteria_lib.data import dataset_info  # noqa: E402
from soteria_lib.federated import local_sgd, run_fedavg  # noqa: E402
from soteria_lib.flower import Federation, client_data, defense_settings, node_partition  # noqa: E402
from soteria_lib.flower_mods import build_defense, client_seed, defend_update, defense_mod  # noqa: E402
from soteria_lib.flower_run import FlowerRunFailed, LocalSuperLink  # noqa: E402
from soteria_lib.runtime import seed_everything  # noqa: E402
from soteria_lib.telemetry import QUIET  # noqa: E402
from soteria_lib.threat import PrivateBatch, share_update  # noqa: E402

NORMALIZATION = dataset_info("mnist").normalization
FEDERATION_APP, STOCK_APP = book_file("flower_apps", "federation"), book_file("flower_apps", "stock")


def app_config(app, **overrides) -> dict:
    """The app's run config ([tool.flwr.app.config]) with ``overrides``."""
    config = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return {**config, **overrides}


@pytest.fixture(scope="module")
def superlink():
    with LocalSuperLink(cpus=2) as link:
        yield link


@pytest.fixture
def one_thread():
    """One torch thread here, as in every Flower process: the same kernels, so the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_flwr_run_of_the_federation_app_repeats_our_fedavg_rounds_exactly(data_root, superlink, tmp_path,
                                                                         one_thread):
    """The app's default federation (4 clients of 60 MNIST images, Soteria at 60 % on every step,
    2 rounds): same seeds, clients, batches and averaging order, so on one machine every round's
    accuracy and loss are bit-equal (no tolerance needed; a different round would differ)."""
    config = app_config(FEDERATION_APP, **{"data-root": str(data_root)})
    run = superlink.run(FEDERATION_APP, {"data-root": str(data_root)}, supernodes=4, output=tmp_path)
    federation = Federation.from_run_config(config)
    experiment = federation.experiment
    seed_everything(experiment.training.seed)
    ours = run_fedavg(federation.model(), federation.split(train=True), federation.split(train=False),
                      experiment.training, experiment.build_defense(), progress=False, normalization=NORMALIZATION)
    assert [(r["round"], r["accuracy"], r["loss"]) for r in run.history] == \
        [(r["round"], r["accuracy"], r["loss"]) for r in ours]
    assert ours[-1]["accuracy"] > ours[0]["accuracy"] + 0.08  # it really trained (9 % -> 20 % here)
    assert run.result["engine"].startswith("flwr ") and run.result["run_config"]["defense"] == "soteria"
    assert run.result["telemetry"] == QUIET  # the server's process ran with telemetry off


def test_the_curious_server_rebuilds_an_undefended_client_and_fails_against_soteria(data_root, superlink,
                                                                                     tmp_path):
    """Four clients of one image each take one step (federated SGD): the curious server around
    the federation's strategy reads each client's gradient off its update and runs plain DLG at
    the teaching budget. L-BFGS is chaotic across machines, so the test asks what is promised:
    undefended images come back (median PSNR above 15 dB; about 22 dB here) and Soteria's do not
    (every one below 12 dB; about 7.5 here)."""
    sgd = {"data-root": str(data_root), "train-examples": 4, "fraction": 1.0, "rounds": 1, "batch-size": 1,
           "seed": 0, "attack": "dlg"}
    psnr = {}
    for defense, rate in (("none", 0.0), ("soteria", 80.0)):
        config = {**sgd, "defense": defense, "pruning-rate": rate}
        run = superlink.run(FEDERATION_APP, config, supernodes=4, output=tmp_path)
        federation = Federation.from_run_config(app_config(FEDERATION_APP, **config))
        assert sorted(o.client for o in run.observations) == [0, 1, 2, 3]
        assert all(o.steps == 1 and o.examples == 1 for o in run.observations)
        psnr[defense] = [score(o, client_data(federation, o.client)[0], NORMALIZATION)["psnr"]
                         for o in run.observations]
    assert sum(sorted(psnr["none"])[1:3]) / 2 > 15, psnr
    assert max(psnr["soteria"]) < 12, psnr


@pytest.fixture(scope="module")
def stock_run(data_root, superlink, tmp_path_factory):
    """The stock app's default run: Flower's FedAvg and a plain-SGD ClientApp with the Soteria mod
    (80 %), four clients of one image, two rounds, the curious strategy recording every update."""
    overrides = {"data-root": str(data_root)}
    run = superlink.run(STOCK_APP, overrides, supernodes=4, output=tmp_path_factory.mktemp("stock"))
    return run, Federation.from_run_config(app_config(STOCK_APP, **overrides))


def test_the_curious_strategy_around_stock_fedavg_records_every_update_of_every_round(stock_run):
    run, federation = stock_run
    assert sorted((u["round"], u["client"]) for u in run.updates) == [(t, k) for t in (1, 2) for k in range(4)]
    assert all(u["steps"] == 1 and u["examples"] == 1 for u in run.updates)
    assert [r["round"] for r in run.history] == [0, 1, 2]


def test_the_mod_in_a_stock_client_app_shares_the_library_defense_of_the_gradient(stock_run):
    """Round 1: every client took one SGD step on its one image from the initial weights, so the
    update the server received is the library's Soteria applied to that image's gradient. The
    weights travel as float32, and the update is read off two subtractions of them: equal up to
    a few float32 roundings of the weights' magnitude divided by the learning rate; the zeros of
    Soteria's mask arrive exactly."""
    run, federation = stock_run
    experiment = federation.experiment
    name, settings = defense_settings(app_config(STOCK_APP))
    torch.manual_seed(experiment.training.seed)  # the server's initial model
    model = federation.model()
    lr = experiment.training.lr
    for update in (u for u in run.updates if u["round"] == 1):
        inputs, labels = client_data(federation, update["client"])
        shared = share_update(model, PrivateBatch(inputs, labels), NORMALIZATION, build_defense(name, settings, 0))
        for received, sent, weights in zip(update["gradients"], shared.gradients, model.parameters()):
            bound = 8 * torch.finfo(torch.float32).eps * float(weights.detach().abs().max()) / lr
            assert torch.allclose(received, sent, rtol=0, atol=bound)
        fc = update["gradients"][-2]  # the defended layer's weight gradient: 80 % of its columns pruned
        assert torch.equal(fc == 0, shared.gradients[-2] == 0) and (fc == 0).all(0).float().mean() >= 0.79


def test_defend_update_after_one_step_is_the_defense_of_the_gradient(data_root, one_thread):
    """What the mod computes, without Flower: one undefended local step, then defend_update,
    read back by the server, is the defense of the batch gradient, up to float32 rounding."""
    federation = Federation.from_run_config(app_config(STOCK_APP, **{"data-root": str(data_root)}))
    name, settings = defense_settings(app_config(STOCK_APP))
    inputs, labels = client_data(federation, 0)
    model, lr = federation.model(), federation.experiment.training.lr
    local = federation.model()
    local.load_state_dict(model.state_dict())
    local_sgd(local, inputs, labels, federation.experiment.training, None, torch.Generator(), NORMALIZATION)
    sent = defend_update(model, local.state_dict(), lr, 1, build_defense(name, settings, 0), inputs, labels)
    expected = share_update(model, PrivateBatch(inputs, labels), NORMALIZATION, build_defense(name, settings, 0))
    read = update_as_gradient(model, sent, lr, 1)
    for got, want, weights in zip(read, expected.gradients, model.parameters()):
        assert torch.allclose(got, want, rtol=0, atol=8 * torch.finfo(torch.float32).eps
                              * float(weights.detach().abs().max()) / lr)
    assert torch.equal(read[-2] == 0, expected.gradients[-2] == 0) and (read[-2] == 0).all(0).float().mean() >= 0.79
    assert list(sent) == list(local.state_dict())  # the same keys, in the same order


def test_noise_defenses_draw_anew_for_every_client_and_round():
    model = Federation.from_run_config(app_config(STOCK_APP)).model()
    grads = tuple(torch.zeros_like(p) for p in model.parameters())
    x, y = torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long)
    draw = [build_defense("dp-gaussian", {"noise": 0.1}, client_seed(0, r, k))(model, x, y, grads)[0]
            for r, k in ((1, 0), (1, 1), (2, 0), (1, 0))]
    assert not torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    assert torch.equal(draw[0], draw[3])  # seeded: the same client and round draw the same noise


def test_bad_federations_and_settings_are_refused_in_one_line():
    config = app_config(FEDERATION_APP)
    with pytest.raises(ValueError, match="train_examples must be an integer >= 1"):
        Federation(Federation.from_run_config(config).experiment, train_examples=0)
    with pytest.raises(ValueError, match="the run config lacks 'seed'"):
        Federation.from_run_config({k: v for k, v in config.items() if k != "seed"})
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        Federation.from_run_config({**config, "batch-size": 0})
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 3},
                      state=RecordDict(), run_config=config)
    with pytest.raises(ValueError, match="has 3 SuperNodes but the run config asks for clients=4.*num-supernodes=4"):
        node_partition(Federation.from_run_config(config), context)
    with pytest.raises(ValueError, match="noise does not apply to defense 'soteria'"):
        defense_mod("soteria", lambda: None, lambda context: None, {"pruning_rate": 50.0, "noise": 0.1})


def test_a_flower_run_that_fails_says_why_in_one_line(data_root, superlink, tmp_path):
    """Three SuperNodes for a run config of four clients: the nodes refuse, the server stops at
    once (not after its timeout), and the error names the fix."""
    with pytest.raises(FlowerRunFailed, match=r"3 SuperNodes but the run config asks for clients=4.*num-supernodes=4"):
        superlink.run(FEDERATION_APP, {"data-root": str(data_root)}, supernodes=3, output=tmp_path)
