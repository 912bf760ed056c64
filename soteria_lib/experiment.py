"""One reconstruction experiment, end to end: client, defense, attacker, then the metrics.

The sequence keeps the threat model's order: the client builds its :class:`PrivateBatch` and
shares a defended :class:`SharedUpdate`; the attack sees ``(model, update)`` only; the ground
truth is read again only afterwards, to score the reconstruction.
"""
from __future__ import annotations

import inspect
import os
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import __version__
from .attacks import Reconstruction, get_attack
from .data import Normalization, Target, dataset_info, load_target
from .defenses import NOISE_PARAMETERS, get_defense
from .defenses.registry import check_rate
from .metrics import image_metrics, label_accuracy
from .models import MODELS, get_model
from .threat import PrivateBatch, SharedUpdate, share_update

# The published set-up of each attack: which model (with its options per scale), input space
# and split it was run with, and whether the server is given the labels. GS's teaching scale
# uses a ConvNet of width 16 (1/16 of the compute of the published width 64).
ATTACK_PRESETS = {
    "dlg": {"model": "lenet", "model_options": {}, "normalize": False, "train_split": True,
            "labels_known": False},
    "gs": {"model": "convnet", "model_options": {"teaching": {"width": 16}, "paper": {"width": 64}},
           "normalize": True, "train_split": False, "labels_known": True},
}
# Options every attack receives from the Setup itself; attack_options may not repeat them.
SETUP_OPTIONS = {"model", "update", "max_iterations", "seed", "infer_labels", "progress", "frame_every",
                 "adaptive"}


SCALE_VARIABLE = "SOTERIA_SCALE"
SCALES = ("teaching", "paper")


def notebook_scale() -> str:
    """The budget the notebooks run at: ``$SOTERIA_SCALE``, ``teaching`` (default, 2 CPU cores,
    seconds) or ``paper`` (the published budgets, for a GPU)."""
    scale = os.environ.get(SCALE_VARIABLE, "teaching").strip() or "teaching"
    if scale not in SCALES:
        raise ValueError(f"{SCALE_VARIABLE}={scale!r}; choose one of {list(SCALES)}")
    return scale


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
    noise: float = 0.0  # dp-gaussian's sigma, dp-laplace's scale
    clip: float | None = None  # dp-*: global L2 norm the update is clipped to before the noise
    adaptive: bool = False  # mask-aware attacker: match only the entries the update shares
    seed: int = 0
    max_iterations: int | None = None
    scale: str = "teaching"
    infer_labels: bool = False
    device: str = "cpu"
    data_root: str | None = None
    attack_options: dict = field(default_factory=dict)
    model: str | None = None  # None: the attack's published model
    model_options: dict = field(default_factory=dict)  # on top of the preset's, e.g. {"width": 32}


@dataclass
class RunResult:
    setup: Setup
    target: Target
    update: SharedUpdate
    reconstruction: Reconstruction
    metrics: dict
    model: torch.nn.Module


def defense_params(setup: Setup) -> dict:
    if setup.defense in NOISE_PARAMETERS:
        # seed + 1: the noise never replays the attacker's random start, drawn from seed
        return {NOISE_PARAMETERS[setup.defense]: setup.noise, "clip": setup.clip, "seed": setup.seed + 1}
    if setup.noise or setup.clip is not None:
        raise ValueError(f"noise and clip apply to {sorted(NOISE_PARAMETERS)} only, not {setup.defense!r}")
    if setup.defense in ("none", "no"):
        return {}
    params = {"pruning_rate": setup.pruning_rate}
    if setup.defense in ("soteria", "ours") and setup.epsilon is not None:
        params["epsilon"] = setup.epsilon
    return params


def model_spec(setup: Setup) -> tuple[str, dict]:
    """The model to build: the attack's published one unless ``setup.model`` names another. The
    preset's options for the scale apply to its own model only; ``setup.model_options`` go on top."""
    preset = ATTACK_PRESETS[setup.attack]
    name = setup.model or preset["model"]
    options = preset["model_options"].get(setup.scale, {}) if name == preset["model"] else {}
    return name, {**options, **setup.model_options}


def check_attack_options(name: str, attack, options: dict) -> None:
    """Every key of ``options`` must be a keyword of the attack not already set by the Setup."""
    accepted = set(inspect.signature(attack).parameters) - SETUP_OPTIONS
    for key in options:
        if key not in accepted:
            raise ValueError(f"attack {name!r} has no option {key!r}; it accepts {sorted(accepted)}")


def validate(setup: Setup):
    """Check every name and number before any work or output; returns the built pieces."""
    attack = get_attack(setup.attack)
    preset = ATTACK_PRESETS[setup.attack]
    check_attack_options(setup.attack, attack, setup.attack_options)
    model_name, _ = model_spec(setup)
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(MODELS)}")
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
    model_name, model_options = model_spec(setup)
    # Client and attacker both run the model in eval mode (BatchNorm on running statistics).
    model = get_model(model_name, info.shape, info.num_classes, **model_options).to(device).eval()
    batch = PrivateBatch(normalization.normalize(target.image).unsqueeze(0).to(device),
                         torch.tensor([target.label], device=device))
    disclose = preset["labels_known"] and not setup.infer_labels
    update = share_update(model, batch, normalization, defense, setup.defense, disclose_labels=disclose)

    iterations = attack.scales[setup.scale] if setup.max_iterations is None else setup.max_iterations
    start = time.perf_counter()
    reconstruction = attack(model, update, max_iterations=iterations, seed=setup.seed,
                            infer_labels=setup.infer_labels, progress=progress, frame_every=frame_every,
                            adaptive=setup.adaptive, **setup.attack_options)
    seconds = time.perf_counter() - start

    metrics = dict(asdict(setup), model=model_name, model_options=model_options, version=__version__)
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
    metrics.update(reconstruction.details)
    return RunResult(setup, target, update, reconstruction, metrics, model)
