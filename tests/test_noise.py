import math

import pytest
import torch

from soteria_lib.defenses import from_flags, get_defense
from soteria_lib.defenses.noise import clip_global_norm
from soteria_lib.pipeline import Setup, validate

# One "update" of 200,000 zero entries in two tensors: the output is the noise itself.
ZEROS = (torch.zeros(400, 250), torch.zeros(100_000))
FAKE = (None, None, None)  # model, inputs, labels: the noise defenses do not read them


def _noise(name, **params):
    return torch.cat([n.flatten() for n in get_defense(name, **params)(*FAKE, ZEROS)])


@pytest.mark.parametrize("name, param, std_per_unit", [("dp-gaussian", "sigma", 1.0),
                                                       ("dp-laplace", "scale", math.sqrt(2))])
@pytest.mark.parametrize("level", [1e-4, 0.1, 3.0])
def test_noise_has_the_requested_scale(name, param, std_per_unit, level):
    noise = _noise(name, **{param: level}, seed=3).double()
    # 200,000 samples: the sample mean and std are within 1 % of the std (about 4.5 standard errors)
    assert abs(float(noise.mean())) < 0.01 * level * std_per_unit
    assert float(noise.std()) == pytest.approx(level * std_per_unit, rel=0.01)
    if name == "dp-laplace":  # E|n| = b for Laplace(0, b), against sigma * sqrt(2/pi) for a Gaussian
        assert float(noise.abs().mean()) == pytest.approx(level, rel=0.01)


@pytest.mark.parametrize("name, param", [("dp-gaussian", "sigma"), ("dp-laplace", "scale")])
def test_same_seed_same_noise_and_the_stream_moves_on(name, param):
    first = get_defense(name, **{param: 0.5}, seed=7)
    a, b = first(*FAKE, ZEROS), first(*FAKE, ZEROS)
    c = get_defense(name, **{param: 0.5}, seed=7)(*FAKE, ZEROS)
    d = get_defense(name, **{param: 0.5}, seed=8)(*FAKE, ZEROS)
    assert all(torch.equal(x, y) for x, y in zip(a, c))
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[0], d[0])


def test_clipping_bounds_the_global_norm_before_the_noise():
    gradients = (torch.full((3, 4), 2.0), torch.full((5,), -1.0))  # global norm sqrt(48 + 5)
    clipped = clip_global_norm(gradients, 1.0)
    assert float(torch.sqrt(sum((g ** 2).sum() for g in clipped))) == pytest.approx(1.0)
    for c, g in zip(clipped, gradients):  # one common factor: directions are kept
        torch.testing.assert_close(c, g / math.sqrt(53))
    assert all(torch.equal(c, g) for c, g in zip(clip_global_norm(gradients, 100.0), gradients))
    noisy = get_defense("dp-gaussian", sigma=0.2, clip=1.0, seed=1)(*FAKE, gradients)
    noise = get_defense("dp-gaussian", sigma=0.2, seed=1)(*FAKE, tuple(torch.zeros_like(g) for g in gradients))
    for n, c, z in zip(noisy, clipped, noise):
        torch.testing.assert_close(n, c + z)


@pytest.mark.parametrize("name, params, message", [
    ("dp-gaussian", {"sigma": -0.1}, "sigma"), ("dp-gaussian", {"sigma": math.nan}, "sigma"),
    ("dp-laplace", {"scale": -1}, "scale"), ("dp-laplace", {"scale": math.inf}, "scale"),
    ("dp-gaussian", {"sigma": 0.1, "clip": -1.0}, "clip"), ("dp-laplace", {"scale": 0.1, "clip": 0}, "clip"),
])
def test_bad_noise_parameters(name, params, message):
    with pytest.raises(ValueError, match=message):
        get_defense(name, **params)


def test_setup_builds_its_defense_seeded_from_the_run():
    defense = Setup(defense="dp-laplace", defense_settings={"scale": 0.1, "clip": 2.0}, seed=5).setting().build(5)
    assert (defense.scale, defense.clip, defense.seed) == (0.1, 2.0, 6)
    assert from_flags("dp-gaussian", noise=0.3) == {"sigma": 0.3}
    with pytest.raises(ValueError, match="noise does not apply"):
        from_flags("soteria", pruning_rate=10, noise=0.1)
    with pytest.raises(ValueError, match="sigma"):
        validate(Setup(defense="dp-gaussian", defense_settings={"sigma": -1.0}))
    with pytest.raises(ValueError, match="seed"):
        get_defense("dp-gaussian", sigma=0.1, seed=1.7)  # never silently truncated
