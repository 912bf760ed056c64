"""The threat model in types: what the client keeps, what it shares, what the attacker gets.
Taught on the book's threat-model page and in chapter 1.

* :class:`PrivateBatch` stays on the client. Only :func:`share_update` and the metrics read it.
* :class:`SharedUpdate` is what leaves the client: the (possibly defended) gradient of the
  training loss with respect to every parameter, plus declared :class:`UpdateMetadata`.
* Attacks take ``(model, update)`` and nothing else; their signatures have no place for the
  private batch, and :class:`SharedUpdate` holds no reference to it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
import torch
from torch import nn
from torch.nn import functional as F

from .data import Normalization
from .introspection import num_classes

Gradients = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class PrivateBatch:
    """The client's data: images ``inputs`` of shape (batch, channels, height, width) in the
    model's input space, and one integer class ``label`` >= 0 per image (:func:`share_update`
    checks them against the model's classes)."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.inputs.ndim != 4:
            hint = ": one image needs a batch dimension, inputs.unsqueeze(0)" if self.inputs.ndim == 3 else ""
            raise ValueError("a private batch holds images of shape (batch, channels, height, width), got inputs "
                             f"of shape {tuple(self.inputs.shape)}{hint}")
        if len(self.inputs) == 0:
            raise ValueError("a private batch holds at least one input, "
                             f"got inputs of shape {tuple(self.inputs.shape)}")
        if self.labels.shape != (len(self.inputs),) or self.labels.is_floating_point() or self.labels.is_complex():
            raise ValueError(f"a private batch has one integer label per input: {len(self.inputs)} inputs, "
                             f"labels of shape {tuple(self.labels.shape)} and type {self.labels.dtype}")
        if self.labels.dtype == torch.bool or int(self.labels.min()) < 0:
            raise ValueError(f"labels are class indices >= 0, got {int(self.labels.min())} (cross-entropy "
                             "ignores -100, and would share an all-zero gradient)")


@dataclass(frozen=True)
class UpdateMetadata:
    """What the server is told (or may assume) besides the gradients."""

    batch_size: int
    input_shape: tuple[int, int, int]
    num_classes: int
    normalization: Normalization
    defense: str = "none"
    defense_settings: dict = field(default_factory=dict)  # public (Kerckhoffs): the attacker knows them
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SharedUpdate:
    """The message a client sends: one gradient tensor per model parameter, detached."""

    gradients: Gradients
    metadata: UpdateMetadata


def loss_gradients(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                   create_graph: bool = False) -> Gradients:
    """Gradient of the mean cross-entropy training loss with respect to every parameter.

    The models of this library end in an ``nn.Linear`` classifier whose outputs are the logits
    (the layer chapter 1 shows leaking, and Soteria's default layer); a model whose output does
    not match its last ``nn.Linear`` is refused."""
    try:
        logits = model(inputs)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:  # torch's own message on a batch of the wrong size or channels
        raise ValueError(f"the model cannot read inputs of shape {tuple(inputs.shape)}: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    classes = num_classes(model)  # raises when the model has no nn.Linear
    if logits.shape != (len(inputs), classes):
        raise ValueError(f"the model's output has shape {tuple(logits.shape)}, but its last nn.Linear has "
                         f"{classes} outputs: the library expects logits from a final nn.Linear layer")
    loss = F.cross_entropy(logits, labels)
    return tuple(torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph))


def share_update(model: nn.Module, batch: PrivateBatch, normalization: Normalization, defense=None,
                 disclose_labels: bool = False) -> SharedUpdate:
    """The client's side of one FL step: the defense's data hook, the gradient, the defense's update
    hook, detach. ``defense`` is a registered defense (:mod:`soteria_lib.defenses`) or None; its
    name and settings are declared in the metadata, as an attacker who knows the defense has them.

    ``disclose_labels`` models a server that knows the labels (GS's threat model, as published):
    they are declared in ``metadata.extra["labels"]``; the images never are.
    """
    classes = num_classes(model)
    if int(batch.labels.max()) >= classes:
        raise ValueError(f"label {int(batch.labels.max())} is out of range for a model with {classes} classes "
                         f"(labels are in [0, {classes - 1}])")
    inputs, labels = (batch.inputs, batch.labels) if defense is None else defense.on_data(batch.inputs, batch.labels)
    gradients = loss_gradients(model, inputs, labels)
    if not all(bool(torch.isfinite(g).all()) for g in gradients):
        raise FloatingPointError("the training loss has a NaN or infinite gradient: the model has diverged")
    setting = None
    if defense is not None:
        gradients = defense.on_update(model, inputs, labels, gradients)
        setting = defense.setting()
    name = "none" if defense is None else setting.defense if setting else type(defense).__name__
    metadata = UpdateMetadata(
        batch_size=batch.inputs.shape[0],
        input_shape=tuple(batch.inputs.shape[1:]),
        num_classes=classes,
        normalization=normalization,
        defense=name,
        defense_settings=setting.settings() if setting else {},
        extra={"labels": batch.labels.detach().clone()} if disclose_labels else {},
    )
    return SharedUpdate(tuple(g.detach().clone() for g in gradients), metadata)


def share_local_update(model: nn.Module, batch: PrivateBatch, normalization: Normalization, defense=None,
                       steps: int = 1, lr: float = 0.1, disclose_labels: bool = False) -> SharedUpdate:
    """A FedAvg client's round: ``steps`` SGD steps on its batch, each through :func:`share_update`
    (the defense on every step), then what the server reads off the returned weights,

        g_hat = (w - w_steps) / (lr * steps),

    the mean of the defended gradients along the way (chapter 6's curious server). One step
    shares the defended gradient itself. The protocol is public: the metadata's ``extra`` holds
    ``local_steps`` and ``local_lr``. ``model`` keeps its weights."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if steps == 1:
        return share_update(model, batch, normalization, defense, disclose_labels)
    local = copy.deepcopy(model)
    params = list(local.parameters())
    for _ in range(steps):
        update = share_update(local, batch, normalization, defense, disclose_labels)
        with torch.no_grad():
            for p, g in zip(params, update.gradients):
                p.sub_(lr * g)
    gradients = tuple(((w.detach() - p.detach()) / (lr * steps)).clone() for w, p in zip(model.parameters(), params))
    metadata = replace(update.metadata, extra={**update.metadata.extra, "local_steps": steps, "local_lr": lr})
    return SharedUpdate(gradients, metadata)
