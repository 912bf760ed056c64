"""One loop serves every attack (issue 25) and the attackers that know each defense (issue 26):
an option of the shared problem takes effect for DLG and GS alike; the noise-aware read-out sees
through Gaussian noise; the stronger DLG rebuilds an image whatever label it starts from."""
import math

import pytest
import torch

from soteria_lib.attacks import attack_info, get_attack
from soteria_lib.attacks.battery import attacker_info
from soteria_lib.attacks.dlg import matching_objective
from soteria_lib.attacks.matching import COSTS
from soteria_lib.attacks.loop import noise_energy, prepare, snr_weights
from soteria_lib.attacks.prior import read_representation, readout_error, total_variation
from soteria_lib.data import Normalization, dataset_info
from soteria_lib.defenses import get_defense
from soteria_lib.leakage import true_representation
from soteria_lib.metrics import psnr
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, SharedUpdate, share_update

SMALL = {"dlg": ("lenet", {}, Normalization.identity(3), False),
         "gs": ("convnet", {"width": 4}, dataset_info("cifar10").normalization, True)}


def _update(attack: str, defense=None, seed: int = 0):
    name, options, norm, disclose = SMALL[attack]
    torch.manual_seed(seed)
    model = get_model(name, (3, 32, 32), **options).eval()
    batch = PrivateBatch(norm.normalize(torch.rand(1, 3, 32, 32)), torch.tensor([2]))
    return model, batch, share_update(model, batch, norm, defense, disclose_labels=disclose)


@pytest.mark.parametrize("attack", ["dlg", "gs"])
def test_dropping_the_defended_layer_takes_effect_for_every_attack(attack):
    """With ``drop_defended_layer`` the attack never reads the defended weight gradient: replacing it
    by noise changes nothing, bit for bit; without the option it changes the result."""
    model, _, update = _update(attack, get_defense("soteria", pruning_rate=60))
    tampered = list(update.gradients)
    tampered[-2] = torch.randn_like(tampered[-2])
    other = SharedUpdate(tuple(tampered), update.metadata)
    run = get_attack(attack)
    dropped = [run(model, u, max_iterations=3, seed=1, progress=False, drop_defended_layer=True) for u in (update, other)]
    assert torch.equal(dropped[0].inputs, dropped[1].inputs) and dropped[0].losses == dropped[1].losses
    kept = [run(model, u, max_iterations=3, seed=1, progress=False) for u in (update, other)]
    assert not torch.equal(kept[0].inputs, kept[1].inputs)


@pytest.mark.parametrize("attack", ["dlg", "gs"])
def test_restarts_and_the_box_take_effect_for_every_attack(attack):
    model, _, update = _update(attack)
    low, high = update.metadata.normalization.box(torch.zeros(3, 32, 32))
    result = get_attack(attack)(model, update, max_iterations=2, seed=0, progress=False, restarts=3, box="sigmoid")
    assert result.details["restarts"] == 3
    assert result.matching_loss == min(result.details["restart_matching_losses"])
    assert bool(((result.inputs >= low) & (result.inputs <= high)).all())


def test_the_noise_aware_read_out_sees_through_gaussian_noise_better_than_through_soterias_zeros():
    torch.manual_seed(0)
    model = get_model("lenet", (3, 32, 32)).eval()
    batch = PrivateBatch(torch.rand(1, 3, 32, 32), torch.tensor([3]))
    truth = true_representation(model, batch.inputs)[0]

    def error(update, readout):
        return float((read_representation(model, update, readout) - truth).norm() / truth.norm())

    noisy = share_update(model, batch, Normalization.identity(3), get_defense("dp-gaussian", sigma=0.01, seed=1))
    pruned = share_update(model, batch, Normalization.identity(3), get_defense("soteria", pruning_rate=80))
    assert error(noisy, "least-squares") < 0.1  # noise at 0.01 hides almost nothing of r
    assert error(noisy, "least-squares") < error(noisy, "row")  # every row beats the best-conditioned one
    assert error(pruned, "least-squares") > 0.5  # Soteria's zeros remove what they prune
    assert 5 * error(noisy, "least-squares") < error(pruned, "least-squares")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_read_out_error_is_measured_against_the_public_mean_not_against_the_norm(seed):
    """On the sigmoid LeNet r is sigmoid outputs, alike for every image: a read-out 1-2 % off in norm can know less
    of the image than the mean public representation does. readout_error compares with that mean."""
    torch.manual_seed(seed)
    model = get_model("lenet", (3, 32, 32), activation="sigmoid", init="uniform").eval()
    mean = true_representation(model, torch.rand(50, 3, 32, 32)).mean(0)
    batch = PrivateBatch(torch.rand(1, 3, 32, 32), torch.tensor([3]))
    truth = true_representation(model, batch.inputs)[0]

    def share(defense):
        return share_update(model, batch, Normalization.identity(3), defense)

    def error(update):
        return readout_error(model, update, truth, mean)

    quiet = share(get_defense("dp-gaussian", sigma=0.01, seed=1))
    loud = share(get_defense("dp-gaussian", sigma=0.1, seed=1))
    assert error(share(get_defense("none"))) < 1e-3  # exact without noise (float32 rounding)
    assert error(quiet) < 0.5 < 1 < error(loud)  # 0.01 keeps most of what tells the image apart, 0.1 none
    relative = float((read_representation(model, quiet, "least-squares") - truth).norm() / truth.norm())
    assert relative < 0.05 and error(quiet) > 5 * relative  # the error in norm understates what is lost
    silent = SharedUpdate(tuple(torch.zeros_like(g) for g in quiet.gradients), quiet.metadata)
    assert error(silent) == math.inf  # nothing to read: the read-out refuses, and knows nothing


def test_snr_weights_follow_the_declared_noise():
    _, _, clean = _update("dlg")
    assert snr_weights(clean) == tuple(1.0 for _ in clean.gradients)
    _, _, loud = _update("dlg", get_defense("dp-gaussian", sigma=10.0, seed=1))
    weights = snr_weights(loud)
    assert all(0 <= w < 0.5 for w in weights)  # noise 10 drowns every tensor of this gradient


def test_the_stronger_dlg_rebuilds_an_undefended_image_from_a_wrong_label():
    """The published DLG optimises the label jointly; the stronger one reads it off the gradient
    (iDLG) and keeps its dummy in the image box, so a start on a wrong label does not matter."""
    torch.manual_seed(1)
    model = get_model("lenet", (1, 28, 28)).eval()
    batch = PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([4]))
    update = share_update(model, batch, Normalization.identity(1))
    for seed in range(3):  # dummy label logits drawn from the seed: their argmax is not always 4
        strong = get_attack("dlg")(model, update, max_iterations=60, seed=seed, progress=False,
                                   infer_labels=True, box="sigmoid", restarts=2)
        assert int(strong.labels[0]) == 4
        assert psnr(strong.inputs, batch.inputs) > 30


@pytest.mark.parametrize("attack", ["dlg", "gs"])
def test_an_attack_goes_on_without_a_prior_it_cannot_read_and_says_so(attack):
    model, _, update = _update(attack)
    gradients = list(update.gradients)
    gradients[-1] = torch.zeros_like(gradients[-1])  # no bias gradient: r cannot be read off the update
    result = get_attack(attack)(model, SharedUpdate(tuple(gradients), update.metadata), max_iterations=1,
                                progress=False, representation_prior=0.1)
    assert result.iterations == 1 and result.details["prior"].startswith("not used: the shared bias gradient")


@pytest.mark.parametrize("attack", ["dlg", "gs"])
def test_an_update_that_is_noise_alone_is_matched_with_equal_weights_and_says_so(attack):
    """The noise-aware attacker weighs tensors by their signal-to-noise ratio; where every tensor is
    noise alone it cannot, and goes on with equal weights instead of stopping the sweep."""
    model, _, update = _update(attack, get_defense("dp-gaussian", sigma=10.0, seed=1))
    silent = SharedUpdate(tuple(torch.zeros_like(g) for g in update.gradients), update.metadata)
    with pytest.raises(ValueError, match="noise alone"):
        snr_weights(silent)
    result = get_attack(attack)(model, silent, max_iterations=1, progress=False, layer_weights="snr")
    assert result.iterations == 1 and result.details["layer_weights"].startswith("equal: every shared tensor")


@pytest.mark.parametrize("attack", ["dlg", "gs"])
def test_an_attacker_that_knows_dp_sgd_clips_its_dummy_as_the_client_did(attack):
    """DP-SGD shares the clipped gradient: at the private image the dummy's gradient matches it only
    once the dummy's gradient is clipped too (mimic_defense); unclipped, the private image is far
    from the minimum of the matching loss."""
    from soteria_lib.attacks.dlg import soft_cross_entropy
    from soteria_lib.attacks.loop import dummy_gradients, prepare
    from soteria_lib.attacks.matching import l2_cost
    from soteria_lib.attacks.registry import attack_info
    from torch.nn import functional as F

    defense = get_defense("dp-sgd", noise_multiplier=0.0, clip=0.01)  # clips, adds nothing
    model, batch, update = _update(attack, defense)
    params = list(model.parameters())
    labels = F.one_hot(batch.labels, 10).float()
    distances = {}
    for mimic in (False, True):
        problem = prepare(model, update, attack_info(attack).configure(mimic_defense=mimic), attack, True)
        assert (problem.mimic is not None) == mimic
        dummy = dummy_gradients(problem.mimic, params, lambda x, t: soft_cross_entropy(model(x), t), batch.inputs,
                                labels)
        distances[mimic] = float(l2_cost(dummy, problem.shared).detach())
    assert distances[True] < 1e-12 < distances[False]
    result = get_attack(attack)(model, update, max_iterations=1, progress=False, mimic_defense=True)
    assert result.iterations == 1  # the whole attack runs with it
    plain = prepare(model, share_update(model, batch, SMALL[attack][2], None), attack_info(attack).configure(
        mimic_defense=True), attack, True)
    assert plain.mimic is None  # a defense without a public part is matched as before


def test_the_attacker_knows_a_multi_step_update_averages_its_noise():
    """Five local steps share the mean of five independently noised gradients: the attacker's noise
    level is the defense's over the square root of 5, read off the update's public protocol."""
    from soteria_lib.attacks.registry import public_noise_std
    from soteria_lib.threat import share_local_update

    model, batch, one = _update("dlg", get_defense("dp-gaussian", sigma=0.01, seed=1))
    five = share_local_update(model, batch, Normalization.identity(3), get_defense("dp-gaussian", sigma=0.01, seed=1),
                              steps=5, lr=0.05)
    assert public_noise_std(one) == pytest.approx(0.01)
    assert public_noise_std(five) == pytest.approx(0.01 / 5 ** 0.5)
    assert five.metadata.extra["local_steps"] == 5 and five.metadata.extra["local_lr"] == 0.05


def objective_at(model, update, inputs, labels, **options) -> float:
    """DLG's objective (as its search evaluates it) at a given batch, for the attacker of ``options``."""
    config = attack_info("dlg").configure(**options)
    problem = prepare(model, update, config, "dlg", disclosed_labels=False)
    targets = torch.nn.functional.one_hot(labels, update.metadata.num_classes).float()
    value = matching_objective(problem, COSTS[config.cost_fn or "l2"], list(model.parameters()), inputs, targets)
    return float(value.detach())


def _sigmoid_cifar_client(defense):
    torch.manual_seed(0)
    model = get_model("lenet", (3, 32, 32), activation="sigmoid", init="uniform").eval()
    batch = PrivateBatch(torch.rand(1, 3, 32, 32), torch.tensor([3]))
    return model, batch, share_update(model, batch, Normalization.identity(3), defense)


@pytest.mark.parametrize("weights", ["equal", "snr"])
def test_the_noise_energy_is_what_the_l2_loss_expects_at_the_private_image(weights):
    """Thousands of independent noise entries: the loss at the private image concentrates on its
    expectation (a chi-square's relative spread is sqrt(2 / n), about 1 % here)."""
    model, batch, noisy = _sigmoid_cifar_client(get_defense("dp-gaussian", sigma=0.01, seed=1))
    options = {"cost_fn": "l2", "layer_weights": weights, "infer_labels": True}
    masks = prepare(model, noisy, attack_info("dlg").configure(**options), "dlg", False).masks
    assert (masks is None) == (weights == "equal")
    at_private = objective_at(model, noisy, batch.inputs, batch.labels, **options)
    assert at_private == pytest.approx(noise_energy(noisy, masks), rel=0.1)
    _, _, clean = _sigmoid_cifar_client(get_defense("none"))
    assert noise_energy(clean, None) == 0


def test_the_image_prior_adds_the_total_variation_at_its_weight_only_under_noise():
    x = torch.rand(1, 3, 32, 32)
    with_prior, without = attacker_info("image-prior").options, attacker_info("noise-aware").options
    model, batch, noisy = _sigmoid_cifar_client(get_defense("dp-gaussian", sigma=0.01, seed=1))
    labels = batch.labels
    problem = prepare(model, noisy, attack_info("dlg").configure(**without, infer_labels=True), "dlg", False)
    added = objective_at(model, noisy, x, labels, **with_prior) - objective_at(model, noisy, x, labels, **without)
    expected = with_prior["image_prior"] * noise_energy(noisy, problem.masks) * float(total_variation(x))
    assert added == pytest.approx(expected, rel=1e-3)
    _, _, clean = _sigmoid_cifar_client(get_defense("none"))
    assert objective_at(model, clean, x, labels, **with_prior) == objective_at(model, clean, x, labels, **without)
    config = attack_info("dlg").configure(**with_prior, infer_labels=True)
    assert "no noise" in prepare(model, clean, config, "dlg", False).notes["image_prior"]


@pytest.mark.parametrize("box", ["free", "clamp", "sigmoid"])
def test_a_start_image_is_where_every_restart_begins(box):
    """``start_image`` puts every restart's dummy at the given image (the sigmoid's inverse brings it
    1e-6 of the range inside the box); without noise the private image is an exact minimum, so a
    search started there stays near it (GS's signed steps move every pixel a little), while the
    attacker's own draw is far from it."""
    for attack in ("dlg", "gs"):
        model, batch, update = _update(attack)
        norm = update.metadata.normalization
        run = get_attack(attack)
        options = dict(max_iterations=2, seed=0, progress=False, restarts=2, box=box, infer_labels=True)
        started = run(model, update, start_image=batch.inputs, **options)
        drawn = run(model, update, **options)
        truth = norm.denormalize(batch.inputs)
        assert psnr(norm.denormalize(started.inputs), truth) > 45, (attack, box)
        assert psnr(norm.denormalize(drawn.inputs), truth) < 20, (attack, box)
        with pytest.raises(ValueError, match="start image has shape"):
            run(model, update, start_image=batch.inputs[..., :16], **options)


def test_the_oracle_start_needs_the_pipeline_and_is_refused_elsewhere():
    """``start="private"`` is a diagnostic the pipeline serves with the private image; an attack
    called on an update alone has no private image and says so in one line."""
    model, _, update = _update("dlg")
    with pytest.raises(ValueError, match="run_reconstruction"):
        get_attack("dlg")(model, update, max_iterations=1, progress=False, start="private")
    with pytest.raises(ValueError, match="unknown start 'prior'"):
        get_attack("dlg")(model, update, max_iterations=1, progress=False, start="prior")


def test_unit_gradient_lets_the_noise_aware_search_move_against_dp_sgd():
    """DP-SGD clips the dummy's gradient to norm 1 and the signal-to-noise weights are far below 1:
    L-BFGS's absolute tolerances then stop it before its first step (the dummy never moves). With
    ``unit_gradient`` (the battery's noise-aware attacker) it moves and matches better, and the loss
    it reports is still the objective itself at the image it returns."""
    torch.manual_seed(1)
    model = get_model("lenet", (1, 28, 28), activation="sigmoid", init="uniform").eval()
    batch = PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([3]))
    update = share_update(model, batch, Normalization.identity(1), get_defense("dp-sgd", noise_multiplier=0.1, seed=2))
    options = {**attacker_info("noise-aware").options, "infer_labels": True, "box": "sigmoid"}
    assert options["unit_gradient"]
    runs = {unit: get_attack("dlg")(model, update, max_iterations=5, seed=0, progress=False, frame_every=100,
                                    **{**options, "unit_gradient": unit}) for unit in (False, True)}
    moved = {unit: float((r.inputs - r.frames[0][1]).abs().max()) for unit, r in runs.items()}
    assert moved[False] == 0 and len(set(runs[False].losses)) == 1
    assert moved[True] > 0.5 and runs[True].matching_loss < runs[False].matching_loss
    at_result = objective_at(model, update, runs[True].inputs, runs[True].labels, **options)
    assert runs[True].matching_loss == pytest.approx(at_result, rel=1e-5)


def test_unit_gradient_leaves_gs_signed_steps_alone_and_rescales_its_lbfgs():
    """GS's signed Adam steps by the gradient's sign, which a positive constant does not change: bit
    for bit the same run. Its L-BFGS (one optimiser per restart) takes other steps, and either way
    the cost reported is the objective's, unscaled."""
    model, _, update = _update("gs", get_defense("dp-gaussian", sigma=0.01, seed=1))
    run = get_attack("gs")
    common = dict(max_iterations=3, seed=0, progress=False, restarts=2, cost_fn="l2")
    signed = [run(model, update, **common, unit_gradient=unit) for unit in (False, True)]
    assert torch.equal(signed[0].inputs, signed[1].inputs) and signed[0].losses == signed[1].losses
    lbfgs = [run(model, update, **common, optimizer="lbfgs", unit_gradient=unit) for unit in (False, True)]
    assert not torch.equal(lbfgs[0].inputs, lbfgs[1].inputs)
    for result in (*signed, *lbfgs):
        assert result.matching_loss == min(result.details["restart_matching_losses"])


def test_dlg_with_a_line_search_never_raises_its_loss_and_refuses_an_unknown_one():
    """The published DLG takes fixed L-BFGS steps, which under noise can raise the matching loss
    (here: the noise-aware attacker started at a binary digit-like image, Gaussian noise 0.1); with
    ``line_search="strong_wolfe"`` every recorded step is at least as low as the one before."""
    torch.manual_seed(0)
    model = get_model("lenet", (1, 28, 28), activation="sigmoid", init="uniform").eval()
    image = (torch.rand(1, 1, 28, 28) > 0.7).float()
    update = share_update(model, PrivateBatch(image, torch.tensor([3])), Normalization.identity(1),
                          get_defense("dp-gaussian", sigma=0.1, seed=1))
    options = dict(attacker_info("noise-aware").options, max_iterations=10, seed=0, progress=False,
                   infer_labels=True, box="sigmoid", start_image=image)
    runs = {search: get_attack("dlg")(model, update, line_search=search, **options) for search in (None, "strong_wolfe")}
    rose = {search: any(b > a for a, b in zip(r.losses, r.losses[1:])) for search, r in runs.items()}
    assert rose == {None: True, "strong_wolfe": False}, {s: r.losses for s, r in runs.items()}
    with pytest.raises(ValueError, match="unknown line_search 'armijo'"):
        get_attack("dlg")(model, update, line_search="armijo", **options)