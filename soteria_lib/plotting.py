"""Figures: ground truth beside reconstructions, attack progress as a strip of frames, recovered
representations and FedAvg accuracy curves (chapters 1 to 8).

Every figure of the book is at most :data:`PHONE_WIDTH` inches wide, so that a phone shows it
whole at a legible scale (the site draws figures at 100 dpi and shrinks them to no less than
``LEGIBLE_SCALE`` of that, tools/site_scripts.py): a row of images wraps into several rows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import torch

from .data import Normalization

# Inches: the widest figure a 390-px phone shows whole at 80 % of its size (a figure's box there is
# 342 px, so at most 427 px at 100 dpi; a figure with a legend outside its axes draws a little wider
# than its size, so those are made 4 inches wide).
PHONE_WIDTH = 4.2


def to_display(image: torch.Tensor, normalization: Normalization | None = None):
    """A (C, H, W) model-space tensor as an (H, W[, 3]) array in [0, 1] for ``imshow``."""
    image = image.detach().cpu().float()
    if normalization is not None:
        image = normalization.denormalize(image)
    image = image.clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def show_images(images: Sequence[torch.Tensor], titles: Sequence[str],
                normalization: Normalization | None = None, size: float = 1.8, suptitle: str | None = None,
                columns: int | None = None):
    """Images with titles, ``size`` inches each, ``columns`` to a row (default: as many as fit in
    :data:`PHONE_WIDTH`), and a title over them; returns the figure."""
    return _grid([to_display(image, normalization) for image in images], titles, size, suptitle, columns)


def _grid(arrays: Sequence, titles: Sequence[str], size: float, suptitle: str | None = None,
          columns: int | None = None):
    columns = max(1, min(len(arrays), columns or int(PHONE_WIDTH // size)))
    rows = math.ceil(len(arrays) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * 1.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, array, title in zip(axes.flat, arrays, titles):
        ax.imshow(array, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def _drawn_image(panel):
    """The image inside one panel of a saved figure, without its title and margins: the longest run
    of rows, then of columns, that are mostly not white (a title's letters leave most of a row white)."""
    ink = (panel < 0.97).any(axis=-1)
    rows = _longest_run(ink.mean(axis=1) > 0.6)
    columns = _longest_run(ink[rows].mean(axis=0) > 0.6)
    return panel[rows, columns]


def _longest_run(flags) -> slice:
    best, start = (0, 0), None
    for i, flag in enumerate(list(flags) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            best, start = max(best, (start, i), key=lambda run: run[1] - run[0]), None
    return slice(*best)


def show_saved_reconstructions(runs: dict[str, Path], size: float = 1.9, truth: str = "private image"):
    """Reconstructions written by ``python -m soteria_lib.reconstruct --save_image``: the private
    image once (the left half of the first run's ``reconstruction.png``), then each run's
    reconstruction (the right half of its own), titled with its name and the PSNR that its
    ``metrics.json`` records. ``runs`` maps a title to the run's folder."""
    arrays, titles = [], [truth]
    for name, folder in runs.items():
        pair = mpimg.imread(Path(folder) / "reconstruction.png")[..., :3]
        height, width = pair.shape[:2]
        if height > width:  # the two panels one above the other
            first, second = pair[:height // 2], pair[height // 2:]
        else:
            first, second = pair[:, :width // 2], pair[:, width // 2:]
        if not arrays:
            arrays.append(_drawn_image(first))
        arrays.append(_drawn_image(second))
        titles.append(f"{name}\n{json.loads((Path(folder) / 'metrics.json').read_text())['psnr']:.1f} dB")
    return _grid(arrays, titles, size)


def save_comparison(path, truth: torch.Tensor, reconstruction: torch.Tensor, normalization: Normalization,
                    titles: Sequence[str] = ("ground truth", "reconstruction")) -> None:
    """Write ground truth and reconstruction side by side as a PNG (a file, not a page: wider than
    a phone's column)."""
    fig = show_images([truth, reconstruction], titles, normalization, size=2.4, columns=2)
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
    fig, ax = plt.subplots(figsize=(PHONE_WIDTH, 3.2)) if ax is None else (ax.figure, ax)
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
