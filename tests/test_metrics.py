"""Reconstruction metrics: one convention ([0, 1] pixels), non-finite results kept visible, pairing."""
import math

import pytest
import torch

from soteria_lib.data import Normalization
from soteria_lib.metrics import image_metrics, label_accuracy, match_batch, mse, psnr, ssim
from soteria_lib.quantiles import percentile, quantile


def test_a_perfect_reconstruction_has_zero_error_and_full_similarity():
    x = torch.rand(2, 3, 8, 8)
    assert mse(x, x) == 0 and psnr(x, x) == math.inf and ssim(x, x) == pytest.approx(1.0)


def test_psnr_is_ten_log_of_the_inverse_mse():
    x = torch.zeros(1, 1, 8, 8)
    y = torch.full_like(x, 0.1)
    assert mse(y, x) == pytest.approx(0.01) and psnr(y, x) == pytest.approx(20.0)


def test_both_conventions_follow_the_declared_normalization():
    norm = Normalization((0.5,), (0.25,))
    truth = norm.normalize(torch.zeros(1, 1, 8, 8))
    reconstruction = norm.normalize(torch.full((1, 1, 8, 8), 0.5))
    metrics = image_metrics(reconstruction, truth, norm)
    assert metrics["mse"] == pytest.approx(0.25)  # [0, 1] pixels
    assert metrics["mse_normalized"] == pytest.approx(0.25 / 0.25 ** 2)  # the model's input space


def test_a_diverged_reconstruction_is_infinitely_wrong_not_clipped():
    truth = torch.rand(1, 1, 8, 8)
    metrics = image_metrics(torch.full_like(truth, float("nan")), truth, Normalization.identity(1))
    assert metrics["mse"] == math.inf and metrics["psnr"] == -math.inf and not metrics["finite"]
    far = image_metrics(truth + 10, truth, Normalization.identity(1))
    assert far["mse"] == pytest.approx(100.0)  # no clamping hides an exploded attack


def test_shapes_and_label_counts_must_agree():
    with pytest.raises(ValueError, match="shape mismatch"):
        mse(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="predicted labels"):
        label_accuracy(torch.tensor([1, 2]), torch.tensor([1]))
    assert label_accuracy(torch.tensor([1, 2]), torch.tensor([1, 3])) == 0.5


def test_percentile_is_numpy_linear_and_safe_with_infinities():
    values = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert float(percentile(values, 50)) == 2.5 and float(percentile(values, 0)) == 1.0
    assert float(percentile(values, 100)) == 4.0 and float(percentile(values, 25)) == 1.75
    assert quantile([1.0, math.inf, math.inf], 0.75) == math.inf  # no inf - inf = NaN
    assert quantile([1.0, 2.0, math.nan], 1.0) == math.inf  # NaN counts as the worst


def test_match_batch_undoes_a_permutation():
    truth = torch.rand(5, 1, 6, 6)
    order = [3, 0, 4, 1, 2]
    shuffled = torch.empty_like(truth)
    for b, j in enumerate(order):
        shuffled[j] = truth[b] + 0.01 * torch.randn_like(truth[b])
    assert match_batch(shuffled, truth) == order
    shuffled[order[2]] = float("nan")  # a diverged sample still gets a partner
    assert sorted(match_batch(shuffled, truth)) == list(range(5))


@pytest.mark.parametrize("reconstruction, truth, normalization, needle", [
    (torch.rand(0, 1, 8, 8), torch.rand(0, 1, 8, 8), Normalization.identity(1), "at least one image"),
    (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 6, 6), Normalization.identity(1), "shape mismatch"),
    (torch.rand(8, 8), torch.rand(8, 8), Normalization.identity(1), "at least one image of shape (C, H, W)"),
    (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), Normalization((0.5, 0.5), (0.2, 0.2)),
     "the normalization describes 2 channels, the images have 3"),
])
def test_image_metrics_refuse_what_they_cannot_score(reconstruction, truth, normalization, needle):
    """An empty batch once gave NaNs marked finite; mismatched channels a bare broadcasting error."""
    with pytest.raises(ValueError) as info:
        image_metrics(reconstruction, truth, normalization)
    assert needle in str(info.value) and "\n" not in str(info.value)
