"""Figures: ground truth beside reconstructions, attack progress as a strip of frames, recovered
representations and FedAvg accuracy curves (chapters 1 to 8)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

from .data import Normalization


def to_display(image: torch.Tensor, normalization: Normalization | None = None):
    """A (C, H, W) model-space tensor as an (H, W[, 3]) array in [0, 1] for ``imshow``."""
    image = image.detach().cpu().float()
    if normalization is not None:
        image = normalization.denormalize(image)
    image = image.clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def show_images(images: Sequence[torch.Tensor], titles: Sequence[str],
                normalization: Normalization | None = None, size: float = 1.8, suptitle: str | None = None):
    """One row of images with titles (and a title over the row); returns the figure."""
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size * 1.2), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        ax.imshow(to_display(image, normalization), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def save_comparison(path, truth: torch.Tensor, reconstruction: torch.Tensor, normalization: Normalization,
                    titles: Sequence[str] = ("ground truth", "reconstruction")) -> None:
    """Write ground truth and reconstruction side by side as a PNG."""
    fig = show_images([truth, reconstruction], titles, normalization, size=2.4)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def show_frames(frames: Sequence[tuple[int, torch.Tensor]], normalization: Normalization | None = None,
                size: float = 1.5):
    """An attack's progress: the first image of each recorded frame, titled by iteration."""
    return show_images([f[1][0] for f in frames], [f"step {step}" for step, _ in frames], normalization, size)


def compare_representations(recovered: torch.Tensor, true: torch.Tensor, title: str = ""):
    """Recovered against true representation, one point per feature; pruned features sit at 0."""
    fig, ax = plt.subplots(figsize=(4, 4))
    true, recovered = true.detach().cpu().flatten(), recovered.detach().cpu().flatten()
    ax.scatter(true, recovered, s=4, alpha=0.6)
    low, high = float(min(true.min(), recovered.min())), float(max(true.max(), recovered.max()))
    ax.plot([low, high], [low, high], color="gray", linewidth=0.8, label="exact recovery")
    ax.set_xlabel("true feature $r_i$")
    ax.set_ylabel("recovered from the gradient")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig


def plot_accuracy(histories: dict[str, list[dict]], path=None, title: str = "FedAvg test accuracy",
                  ax=None, baseline: tuple[str, list[dict]] | None = None):
    """Test accuracy over rounds, one line per run, plus ``baseline`` (label, history) in black
    when given; drawn into ``ax`` (default: a new figure), saved as PNG when ``path`` is given.
    Returns the figure."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5)) if ax is None else (ax.figure, ax)
    runs = ([(*baseline, dict(color="black", linewidth=2))] if baseline else []) + \
        [(label, history, dict(marker="o", markersize=3)) for label, history in histories.items()]
    for label, history, style in runs:
        ax.plot([h["round"] for h in history], [100 * h["accuracy"] for h in history], label=label, **style)
    ax.set_xlabel("round")
    ax.set_xticks(sorted({h["round"] for _, history, _ in runs for h in history}))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100, format="png")
        plt.close(fig)
    return fig
