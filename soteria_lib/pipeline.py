"""One reconstruction experiment, end to end: client, defense, attacker, then the metrics.

The sequence keeps the threat model's order (chapter 1 and the threat-model page): the client
builds its :class:`PrivateBatch` and shares a defended :class:`SharedUpdate`; the attack sees
``(model, update)`` only; the ground truth is read again only afterwards, to score the
reconstruction. The one exception is a diagnostic and says so in its settings: the oracle start
(``start="private"``, chapter 5) begins the search at the private image. Every notebook,
``python -m soteria_lib.reconstruct`` and the sweep run reconstructions through
:func:`run_reconstruction`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field

import torch

from . import __version__
from .attacks import Reconstruction, attack_info
from .data import Normalization, Target, dataset_info, load_target
from .defenses import DefenseSetting
from .metrics import image_metrics, is_diverged, label_accuracy, trivial_mse
from .models import MODELS, get_model
from .runtime import check_seed, resolve_device, seed_everything, where_it_ran
from .scales import attack_budget
from .threat import PrivateBatch, SharedUpdate, loss_gradients, share_local_update


@dataclass
class Setup:
    """Everything that defines a run; ``asdict(setup)`` is stored with its results.

    The defense is named with its settings (``defense_settings``, for example
    ``{"pruning_rate": 60}``; :mod:`soteria_lib.defenses`); a setting the defense does not have is
    refused. ``attack_options`` are fields of the attack's settings
    (:class:`~soteria_lib.attacks.DLGConfig`, :class:`~soteria_lib.attacks.GSConfig`), for example
    ``{"max_iterations": 50, "adaptive": True}``; ``max_iterations`` defaults to the scale's budget.
    """

    attack: str = "dlg"
    dataset: str = "cifar10"
    target_id: int = -1
    defense: str = "none"
    defense_settings: dict = field(default_factory=dict)
    seed: int = 0
    scale: str = "teaching"
    attack_options: dict = field(default_factory=dict)
    model: str | None = None  # None: the attack's published model
    model_options: dict = field(default_factory=dict)  # on top of the scale's, e.g. {"width": 32}
    input_space: str | None = None  # "pixels" ([0, 1]) or "normalized" (the dataset's); None: the attack's
    model_state: str = "init"  # "init": built from the seed; "round:K": a FedAvg global model, in model_file
    model_file: str | None = None
    local_steps: int = 1  # SGD steps the client takes before it shares (1: one gradient)
    local_lr: float = 0.1  # their learning rate (the FedAvg runs')
    device: str = "cpu"
    data_root: str | None = None

    def setting(self) -> DefenseSetting:
        """The defense with its settings, checked."""
        return DefenseSetting.of(self.defense, **self.defense_settings)

    def attack_config(self):
        """The attack's settings: its defaults, the scale's budget and options, then ``attack_options``."""
        budget = attack_budget(self.scale, self.attack)
        return attack_info(self.attack).configure(**{"max_iterations": budget.iterations, **budget.options,
                                                     **self.attack_options})

    def space(self) -> str:
        """The input space the model reads: ``input_space``, else the one the attack was published in
        (a FedAvg global model reads the normalised space it was trained in)."""
        if self.input_space is not None:
            return self.input_space
        return "normalized" if attack_info(self.attack).normalize else "pixels"

    def model_spec(self) -> tuple[str, dict]:
        """The model to build: the attack's published one unless ``model`` names another. The
        scale's model options apply to the published model only; ``model_options`` go on top."""
        published = attack_info(self.attack).model
        name = self.model or published
        options = dict(attack_budget(self.scale, self.attack).model_options) if name == published else {}
        return name, {**options, **self.model_options}


def effective_rate(model: torch.nn.Module, batch: PrivateBatch, update: SharedUpdate, defense) -> float:
    """The share of the live entries of the client's gradient (non-zero without a defense) that the
    shared update holds as exact zeros, over the parameters the defense alters (a one-layer defense's,
    else all): what a pruning defense really removed. For Soteria this is the share of live features
    of r pruned; at a low nominal rate on a ReLU model it may prune only dead features, an effective
    rate of 0 (chapter 5)."""
    names = [name for name, _ in model.named_parameters()]
    chosen = set(defense.defended_parameters(model)) or set(names)
    live = shared = 0
    raw_gradients = loss_gradients(model, batch.inputs, batch.labels)
    for name, raw, sent in zip(names, raw_gradients, update.gradients):
        if name not in chosen:
            continue
        alive = raw.detach() != 0
        live += int(alive.sum())
        shared += int((alive & (sent == 0)).sum())
    return shared / live if live else 0.0


@dataclass
class RunResult:
    setup: Setup
    target: Target
    update: SharedUpdate
    reconstruction: Reconstruction
    metrics: dict
    model: torch.nn.Module


def check_model_state(setup: Setup) -> None:
    """``init`` with no file, or ``round:K`` with the file of that FedAvg global model."""
    state, _, round_text = setup.model_state.partition(":")
    if state == "init" and not round_text and setup.model_file is None:
        return
    if state != "round" or not round_text.isdigit() or setup.model_file is None:
        raise ValueError(f"model_state must be 'init' or 'round:K' with a model_file, got {setup.model_state!r}")
    if not Path(setup.model_file).is_file():
        raise ValueError(f"model file {setup.model_file} does not exist (run its FedAvg cell first)")


INPUT_SPACES = ("pixels", "normalized")


def check_protocol(setup: Setup) -> None:
    """The model's input space and the client's round: its number of local steps and their learning rate."""
    if setup.input_space not in (None, *INPUT_SPACES):
        raise ValueError(f"unknown input_space {setup.input_space!r}; choose one of {list(INPUT_SPACES)}")
    if isinstance(setup.local_steps, bool) or not isinstance(setup.local_steps, int) or setup.local_steps < 1:
        raise ValueError(f"local_steps must be an integer >= 1, got {setup.local_steps!r}")
    if not (isinstance(setup.local_lr, (int, float)) and math.isfinite(setup.local_lr) and setup.local_lr > 0):
        raise ValueError(f"local_lr must be a finite number > 0, got {setup.local_lr!r}")


def validate(setup: Setup):
    """Check every name and number before any work or output; returns the built pieces."""
    info = attack_info(setup.attack)
    check_seed(setup.seed)
    config = setup.attack_config()
    model_name, _ = setup.model_spec()
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(MODELS)}")
    data = dataset_info(setup.dataset)
    check_model_state(setup)
    check_protocol(setup)
    defense = setup.setting().build(setup.seed)  # a seeded defense draws from seed + 1
    device = resolve_device(setup.device)
    return info, config, data, defense, device


def run_reconstruction(setup: Setup, progress: bool = True, frame_every: int = 0) -> RunResult:
    info, config, data, defense, device = validate(setup)
    target = load_target(setup.dataset, setup.target_id, setup.data_root, train=info.train_split)
    normalization = data.normalization if setup.space() == "normalized" else Normalization.identity(data.shape[0])

    seed_everything(setup.seed)
    model_name, model_options = setup.model_spec()
    # Client and attacker both run the model in eval mode (BatchNorm on running statistics).
    model = defense.on_model(get_model(model_name, data.shape, data.num_classes, **model_options))
    if setup.model_file is not None:  # a FedAvg global model (the architecture and defense that trained it)
        model.load_state_dict(torch.load(setup.model_file, map_location="cpu", weights_only=True))
    model = model.to(device).eval()
    batch = PrivateBatch(normalization.normalize(target.image).unsqueeze(0).to(device),
                         torch.tensor([target.label], device=device))
    disclose = info.labels_known and not config.infer_labels
    update = share_local_update(model, batch, normalization, defense, setup.local_steps, setup.local_lr, disclose)

    start = time.perf_counter()
    # the oracle start (config.start == "private"): chapter 5's diagnostic, never an attacker
    oracle = {"start_image": batch.inputs} if config.start == "private" else {}
    reconstruction = info.run(model, update, config, seed=setup.seed, progress=progress, frame_every=frame_every,
                              **oracle)
    seconds = time.perf_counter() - start

    metrics = dict(asdict(setup), attack_config=asdict(config), model=model_name, model_options=model_options,
                   input_space=setup.space(),
                   defense_seed=getattr(defense, "seed", None), effective_rate=effective_rate(model, batch, update, defense),
                   version=__version__)
    metrics.update(image_metrics(reconstruction.inputs, batch.inputs, normalization))
    metrics["mse_trivial"] = trivial_mse(target.image.unsqueeze(0), data.normalization)
    metrics["diverged"] = is_diverged(metrics["mse"])
    metrics.update(
        label=target.label,
        reconstructed_label=int(reconstruction.labels[0]),
        label_correct=bool(label_accuracy(reconstruction.labels, batch.labels) == 1.0),
        matching_loss=reconstruction.matching_loss,
        iterations=reconstruction.iterations,
        interrupted=reconstruction.interrupted,
        seconds=round(seconds, 3),
        target=target.description,
        **where_it_ran(device),
    )
    metrics.update(reconstruction.details)
    return RunResult(setup, target, update, reconstruction, metrics, model)
