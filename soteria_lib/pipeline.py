"""One reconstruction experiment, end to end: client, defense, attacker, then the metrics.

The sequence keeps the threat model's order (chapter 1 and the threat-model page): the client
builds its :class:`PrivateBatch` and shares a defended :class:`SharedUpdate`; the attack sees
``(model, update)`` only; the ground truth is read again only afterwards, to score the
reconstruction. Every notebook, ``python -m soteria_lib.reconstruct`` and the sweep run
reconstructions through :func:`run_reconstruction`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from . import __version__
from .attacks import Reconstruction, attack_info
from .data import Normalization, Target, dataset_info, load_target
from .defenses import defense_params, get_defense
from .metrics import image_metrics, is_diverged, label_accuracy
from .models import MODELS, get_model
from .runtime import check_seed, resolve_device, seed_everything, where_it_ran
from .scales import attack_budget
from .threat import PrivateBatch, SharedUpdate, share_update


@dataclass
class Setup:
    """Everything that defines a run; ``asdict(setup)`` is stored with its results.

    The defense is named with its run options (the original command line's flags: ``pruning_rate``
    in percent, Soteria's ``epsilon``, the noise scale ``noise`` and ``clip``); an option the
    defense does not take is refused. ``attack_options`` are fields of the attack's settings
    (:class:`~soteria_lib.attacks.DLGConfig`, :class:`~soteria_lib.attacks.GSConfig`), for example
    ``{"max_iterations": 50, "adaptive": True}``; ``max_iterations`` defaults to the scale's budget.
    """

    attack: str = "dlg"
    dataset: str = "cifar10"
    target_id: int = -1
    defense: str = "none"
    pruning_rate: float = 0.0
    epsilon: float | None = None
    noise: float = 0.0  # dp-gaussian's sigma, dp-laplace's scale
    clip: float | None = None  # dp-*: global L2 norm the update is clipped to before the noise
    seed: int = 0
    scale: str = "teaching"
    attack_options: dict = field(default_factory=dict)
    model: str | None = None  # None: the attack's published model
    model_options: dict = field(default_factory=dict)  # on top of the scale's, e.g. {"width": 32}
    device: str = "cpu"
    data_root: str | None = None

    def defense_params(self) -> dict:
        """The defense builder's keywords (a seeded defense draws from ``seed + 1``)."""
        return defense_params(self.defense, self.seed, pruning_rate=self.pruning_rate, noise=self.noise,
                              epsilon=self.epsilon, clip=self.clip)

    def attack_config(self):
        """The attack's settings: its defaults, the scale's budget and options, then ``attack_options``."""
        budget = attack_budget(self.scale, self.attack)
        return attack_info(self.attack).configure(**{"max_iterations": budget.iterations, **budget.options,
                                                     **self.attack_options})

    def model_spec(self) -> tuple[str, dict]:
        """The model to build: the attack's published one unless ``model`` names another. The
        scale's model options apply to the published model only; ``model_options`` go on top."""
        published = attack_info(self.attack).model
        name = self.model or published
        options = dict(attack_budget(self.scale, self.attack).model_options) if name == published else {}
        return name, {**options, **self.model_options}


@dataclass
class RunResult:
    setup: Setup
    target: Target
    update: SharedUpdate
    reconstruction: Reconstruction
    metrics: dict
    model: torch.nn.Module


def validate(setup: Setup):
    """Check every name and number before any work or output; returns the built pieces."""
    info = attack_info(setup.attack)
    check_seed(setup.seed)
    config = setup.attack_config()
    model_name, _ = setup.model_spec()
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(MODELS)}")
    data = dataset_info(setup.dataset)
    defense = get_defense(setup.defense, **setup.defense_params())
    device = resolve_device(setup.device)
    return info, config, data, defense, device


def run_reconstruction(setup: Setup, progress: bool = True, frame_every: int = 0) -> RunResult:
    info, config, data, defense, device = validate(setup)
    target = load_target(setup.dataset, setup.target_id, setup.data_root, train=info.train_split)
    normalization = data.normalization if info.normalize else Normalization.identity(data.shape[0])

    seed_everything(setup.seed)
    model_name, model_options = setup.model_spec()
    # Client and attacker both run the model in eval mode (BatchNorm on running statistics).
    model = get_model(model_name, data.shape, data.num_classes, **model_options).to(device).eval()
    batch = PrivateBatch(normalization.normalize(target.image).unsqueeze(0).to(device),
                         torch.tensor([target.label], device=device))
    disclose = info.labels_known and not config.infer_labels
    update = share_update(model, batch, normalization, defense, setup.defense, disclose_labels=disclose)

    start = time.perf_counter()
    reconstruction = info.run(model, update, config, seed=setup.seed, progress=progress, frame_every=frame_every)
    seconds = time.perf_counter() - start

    metrics = dict(asdict(setup), attack_config=asdict(config), model=model_name, model_options=model_options,
                   version=__version__)
    metrics.update(image_metrics(reconstruction.inputs, batch.inputs, normalization))
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
