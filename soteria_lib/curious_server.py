"""A curious server: it runs an attack on the model updates that clients send it (chapter 9,
"Soteria in a Flower federation"; chapter 8 attacks a client that takes several local steps).

In FedAvg a client returns its weights after local training, not a gradient. A client that took
``s`` steps of SGD with learning rate ``eta`` from the global weights ``w`` returns
``w_k = w - eta * sum_j D(g_j)``, so the server reads the mean shared gradient off the update,

    g_hat = (w - w_k) / (eta * s),

which is exactly the defended gradient ``D(g)`` the client shared when ``s = 1`` (one batch,
one epoch: federated SGD, the setting of DLG, GS and the paper) and an average of ``s`` of them
otherwise. The server knows ``eta`` (it chose it) and is told ``s`` and the client's number of
examples, as FedAvg's weighting needs; those are the declared metadata. It never sees the
client's data: :meth:`CuriousServer.observe` takes the update, and the ground truth enters only
afterwards, in :func:`score`, as everywhere in the library (:mod:`soteria_lib.pipeline`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attacks import Reconstruction, attack_info
from .data import Normalization
from .defenses import DefenseSetting
from .introspection import num_classes
from .metrics import image_metrics, is_diverged, match_batch
from .scales import attack_budget
from .threat import Gradients, SharedUpdate, UpdateMetadata


def update_as_gradient(model: nn.Module, client_state: dict, lr: float, steps: int) -> Gradients:
    """``(w - w_k) / (lr * steps)`` for every parameter of ``model`` (which holds ``w``)."""
    return tuple(((p.detach() - client_state[name].to(p.device)) / (lr * steps)).clone()
                 for name, p in model.named_parameters())


@dataclass
class Observation:
    """What the curious server rebuilt from one client's update in one round."""

    round: int
    client: int
    steps: int
    examples: int
    reconstruction: Reconstruction


class CuriousServer:
    """Runs ``attack`` (a registered attack, at ``scale``'s budget plus ``attack_options``) on
    the updates of the rounds in ``rounds`` (all rounds when None).

    The attack is the plain attacker unless ``attack_options`` say otherwise (for example
    ``{"adaptive": True}``, the mask-aware attacker of chapter 4). Labels are never disclosed:
    an attack published with known labels reads them off the gradient here (``infer_labels``)."""

    def __init__(self, attack: str = "dlg", scale: str = "teaching", attack_options: dict | None = None,
                 rounds: set[int] | None = None, seed: int = 0):
        self.info = attack_info(attack)
        budget = attack_budget(scale, attack)
        options = {"max_iterations": budget.iterations, **budget.options, **(attack_options or {})}
        if self.info.labels_known:
            options.setdefault("infer_labels", True)
        self.config = self.info.configure(**options)
        self.rounds = None if rounds is None else set(rounds)
        self.seed = seed
        self.observations: list[Observation] = []

    def watches(self, round_index: int) -> bool:
        return self.rounds is None or round_index in self.rounds

    def observe(self, round_index: int, client: int, model: nn.Module, client_state: dict, lr: float,
                steps: int, examples: int, input_shape: tuple[int, ...], normalization: Normalization,
                defense: DefenseSetting | None = None) -> Observation:
        """Attack one client's returned weights; ``model`` holds the global weights it started from.
        ``defense``: the clients' defense with its settings, public as the threat model has it."""
        gradients = update_as_gradient(model, client_state, lr, steps)
        metadata = UpdateMetadata(batch_size=examples, input_shape=tuple(input_shape),
                                  num_classes=num_classes(model), normalization=normalization,
                                  defense=defense.defense if defense else "none",
                                  defense_settings=defense.settings() if defense else {})
        model.eval()
        reconstruction = self.info.run(model, SharedUpdate(gradients, metadata), self.config,
                                       seed=self.seed, progress=False)
        observation = Observation(round_index, client, steps, examples, reconstruction)
        self.observations.append(observation)
        return observation


def score(observation: Observation, truth: torch.Tensor, normalization: Normalization) -> dict:
    """The image metrics of one observation against the client's real examples (read only now,
    after the attack), each reconstruction paired with its best-matching example."""
    inputs = observation.reconstruction.inputs.detach().cpu()
    truth = truth.detach().cpu()
    if len(inputs) != len(truth):
        raise ValueError(f"the reconstruction has {len(inputs)} images but the client held {len(truth)}")
    inputs = inputs[match_batch(inputs, truth)]
    metrics = image_metrics(inputs, truth, normalization)
    return {"round": observation.round, "client": observation.client, "steps": observation.steps,
            **metrics, "diverged": is_diverged(metrics["mse"])}
