"""One reconstruction experiment, end to end: client, defense, attacker, then the metrics.

The sequence keeps the threat model's order: the client builds its :class:`PrivateBatch` and
shares a defended :class:`SharedUpdate`; the attack sees ``(model, update)`` only; the ground
truth is read again only afterwards, to score the reconstruction.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import __version__
from .attacks import Reconstruction, get_attack
from .data import Normalization, Target, dataset_info, load_target
from .defenses import get_defense
from .defenses.registry import check_rate
from .metrics import image_metrics, label_accuracy
from .models import get_model
from .threat import PrivateBatch, SharedUpdate, share_update

# The published set-up of each attack: which model, input space and split it was run with.
ATTACK_PRESETS = {
    "dlg": {"model": "lenet", "normalize": False, "train_split": True},
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


@dataclass
class Setup:
    """Everything that defines a run; ``asdict(setup)`` is stored with its results."""

    attack: str = "dlg"
    dataset: str = "cifar10"
    target_id: int = -1
    defense: str = "none"
    pruning_rate: float = 0.0
    epsilon: float | None = None
    seed: int = 0
    max_iterations: int | None = None
    scale: str = "teaching"
    infer_labels: bool = False
    device: str = "cpu"
    data_root: str | None = None
    attack_options: dict = field(default_factory=dict)


@dataclass
class RunResult:
    setup: Setup
    target: Target
    update: SharedUpdate
    reconstruction: Reconstruction
    metrics: dict
    model: torch.nn.Module


def defense_params(setup: Setup) -> dict:
    if setup.defense in ("none", "no"):
        return {}
    params = {"pruning_rate": setup.pruning_rate}
    if setup.defense in ("soteria", "ours") and setup.epsilon is not None:
        params["epsilon"] = setup.epsilon
    return params


def validate(setup: Setup):
    """Check every name and number before any work or output; returns the built pieces."""
    attack = get_attack(setup.attack)
    preset = ATTACK_PRESETS[setup.attack]
    info = dataset_info(setup.dataset)
    check_rate(setup.pruning_rate)
    defense = get_defense(setup.defense, **defense_params(setup))
    if setup.scale not in attack.scales:
        raise ValueError(f"unknown scale {setup.scale!r}; choose one of {sorted(attack.scales)}")
    if setup.max_iterations is not None and setup.max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {setup.max_iterations}")
    device = resolve_device(setup.device)
    return attack, preset, info, defense, device


def run_reconstruction(setup: Setup, progress: bool = True, frame_every: int = 0) -> RunResult:
    attack, preset, info, defense, device = validate(setup)
    target = load_target(setup.dataset, setup.target_id, setup.data_root, train=preset["train_split"])
    channels = info.shape[0]
    normalization = info.normalization if preset["normalize"] else Normalization.identity(channels)

    seed_everything(setup.seed)
    model = get_model(preset["model"], info.shape, info.num_classes).to(device)
    batch = PrivateBatch(normalization.normalize(target.image).unsqueeze(0).to(device),
                         torch.tensor([target.label], device=device))
    update = share_update(model, batch, normalization, defense, setup.defense)

    iterations = attack.scales[setup.scale] if setup.max_iterations is None else setup.max_iterations
    start = time.perf_counter()
    reconstruction = attack(model, update, max_iterations=iterations, seed=setup.seed,
                            infer_labels=setup.infer_labels, progress=progress, frame_every=frame_every,
                            **setup.attack_options)
    seconds = time.perf_counter() - start

    metrics = dict(asdict(setup), model=preset["model"], version=__version__)
    metrics.update(image_metrics(reconstruction.inputs, batch.inputs, normalization))
    metrics.update(
        label=target.label,
        reconstructed_label=int(reconstruction.labels[0]),
        label_correct=bool(label_accuracy(reconstruction.labels, batch.labels) == 1.0),
        matching_loss=reconstruction.matching_loss,
        iterations=reconstruction.iterations,
        interrupted=reconstruction.interrupted,
        seconds=round(seconds, 3),
        device=str(device),
        target=target.description,
    )
    return RunResult(setup, target, update, reconstruction, metrics, model)
