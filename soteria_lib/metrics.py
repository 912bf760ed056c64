"""Reconstruction quality, with one declared convention (chapter 2; batches in chapter 8).

Every metric compares images in **[0, 1] pixel space**: the attacker's output is mapped back
with the declared :class:`~soteria_lib.data.Normalization` and *not clamped*, so a diverged
attack shows up as MSE > 1 rather than being hidden by clipping. Pairing is fixed: sample b of
the reconstruction is compared with sample b of the ground truth (never a best match).

* ``mse``      = mean_j (x_hat_j - x_j)^2 over all pixels and channels (the DLG figures' scale)
* ``mse_normalized`` = the same in the dataset's mean/std space (the GS figures' scale)
* ``psnr``     = 10 log10(1 / mse) in dB (peak 1)
* ``ssim``     = scikit-image's structural similarity with ``data_range = 1``, averaged over the batch
"""
from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity

from .data import Normalization


# A reconstruction farther from the truth than any two images in [0, 1] can be from each other
# (MSE > 1 in pixel space) has left the image domain: the attack exploded. Non-finite MSE counts too.
DIVERGED_MSE = 1.0


# A run *rebuilt* the image when its PSNR reaches 20 dB (MSE <= 0.01 in [0, 1] pixels: a typical
# pixel within a tenth of the range of the truth). A count of rebuilt runs reads DLG's outcomes,
# which are all or nothing (a perfect image or an explosion), better than a median does (chapter 5).
REBUILT_PSNR = 20.0


def is_rebuilt(psnr_value: float) -> bool:
    """The run rebuilt its image: PSNR at least :data:`REBUILT_PSNR` (NaN is not)."""
    return psnr_value >= REBUILT_PSNR


def is_diverged(mse_value: float) -> bool:
    """The attack diverged: its ``mse`` (in [0, 1] pixels) is non-finite or above :data:`DIVERGED_MSE`."""
    return not math.isfinite(mse_value) or mse_value > DIVERGED_MSE


def _check(reconstruction: torch.Tensor, truth: torch.Tensor) -> None:
    if reconstruction.shape != truth.shape:
        raise ValueError(f"shape mismatch: reconstruction {tuple(reconstruction.shape)} vs truth {tuple(truth.shape)}")


def mse(reconstruction: torch.Tensor, truth: torch.Tensor) -> float:
    _check(reconstruction, truth)
    return float(((reconstruction.detach().double() - truth.detach().double()) ** 2).mean())


def psnr(reconstruction: torch.Tensor, truth: torch.Tensor) -> float:
    error = mse(reconstruction, truth)
    return math.inf if error == 0 else 10.0 * math.log10(1.0 / error)


def ssim(reconstruction: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean SSIM over a batch of (B, C, H, W) or one (C, H, W) image, data range 1."""
    _check(reconstruction, truth)
    rec = reconstruction.detach().cpu().double().reshape(-1, *truth.shape[-3:]).numpy()
    ref = truth.detach().cpu().double().reshape(-1, *truth.shape[-3:]).numpy()
    values = [
        structural_similarity(np.moveaxis(a, 0, -1), np.moveaxis(b, 0, -1), data_range=1.0, channel_axis=-1)
        for a, b in zip(rec, ref)
    ]
    return float(np.mean(values))


def label_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of reconstructed labels equal to the true ones (order-sensitive)."""
    predicted, truth = torch.as_tensor(predicted).flatten(), torch.as_tensor(truth).flatten()
    if predicted.shape != truth.shape:
        raise ValueError(f"{predicted.numel()} predicted labels for {truth.numel()} true labels")
    return float((predicted.cpu() == truth.cpu()).double().mean())


def match_batch(reconstruction: torch.Tensor, truth: torch.Tensor) -> list[int]:
    """For batches: the one-to-one pairing of reconstructed and true samples with the least total MSE.

    A batch gradient is a sum over samples, so it is unchanged when the samples are permuted:
    an attack on a batch returns its images in an arbitrary order, and no attacker can do better.
    ``order[b]`` is the reconstruction paired with true sample ``b`` (solved as an assignment
    problem, each reconstruction used once, never a best-of); score with
    ``image_metrics(reconstruction[order], truth, ...)`` and say that the pairing was matched.
    """
    from scipy.optimize import linear_sum_assignment

    _check(reconstruction, truth)
    rec = reconstruction.detach().cpu().double().flatten(1)
    ref = truth.detach().cpu().double().flatten(1)
    cost = torch.cdist(ref, rec).pow(2).numpy()  # (true b, reconstruction j): squared distance
    cost = np.nan_to_num(cost, nan=1e300, posinf=1e300)  # a diverged image is paired last
    rows, cols = linear_sum_assignment(cost)
    return [int(c) for _, c in sorted(zip(rows, cols))]


def trivial_mse(truth_pixels: torch.Tensor, normalization: Normalization) -> float:
    """The MSE, in [0, 1] pixels, of the trivial guess: an image of the dataset's mean colour (the
    normalisation's per-channel mean), which needs neither the gradient nor the private image. An
    attack that does no better has learnt nothing (chapter 5 caps its measures here)."""
    mean = torch.tensor(normalization.mean, dtype=torch.float64).view(-1, 1, 1)
    return mse(mean.expand_as(truth_pixels.detach().cpu().double()), truth_pixels)


def image_metrics(reconstruction: torch.Tensor, truth: torch.Tensor, normalization: Normalization) -> dict:
    """All image metrics for model-space tensors ``reconstruction`` and ``truth`` (B, C, H, W), or
    one image (C, H, W). An empty batch, shapes that differ, or channels that ``normalization``
    does not describe are a one-line ``ValueError``."""
    _check(reconstruction, truth)
    if truth.ndim not in (3, 4) or truth.numel() == 0:
        raise ValueError(f"image metrics need at least one image of shape (C, H, W), got a batch of shape "
                         f"{tuple(truth.shape)}")
    if len(normalization.mean) not in (1, truth.shape[-3]):
        raise ValueError(f"the normalization describes {len(normalization.mean)} channels, the images have "
                         f"{truth.shape[-3]}")
    rec_pixels = normalization.denormalize(reconstruction.detach().cpu())
    true_pixels = normalization.denormalize(truth.detach().cpu())
    finite = bool(torch.isfinite(rec_pixels).all())
    return {
        "mse": mse(rec_pixels, true_pixels) if finite else math.inf,
        "mse_normalized": mse(reconstruction.cpu(), truth.cpu()) if finite else math.inf,
        "psnr": psnr(rec_pixels, true_pixels) if finite else -math.inf,
        "ssim": ssim(rec_pixels, true_pixels) if finite else math.nan,
        "finite": finite,
    }
