"""What every attack shares: the problem it solves and the loop that solves it (chapters 2, 3 and 8).

An attack is its cost, its parametrisation of the dummy and its step; everything the attacker
battery varies lives here, so every option works for every attack by construction:

* :func:`prepare` reads the update once, as the attacker sees it (the model, the shared gradients
  and their public metadata, the defense's name and settings included): which entries enter the
  matching (``adaptive``: the exact zeros are left out; ``ignore_parameters`` and
  ``drop_defended_layer``: whole tensors), how each tensor is weighted (``layer_weights="snr"``:
  by its signal-to-noise ratio under the defense's known noise; where every tensor is noise
  alone, all equally, said in the result's details), the labels (disclosed or read off the
  gradient, iDLG), the prior on the defended layer's input (:mod:`.prior`; where the update gives
  nothing to read, the attack goes on without it and says so) and, with ``mimic_defense``, the
  defense's public deterministic part that the dummy's per-example gradients go through before
  they are matched (DP-SGD's clipping: the shared gradient has norm at most C, so must the
  dummy's). Weights and
  masks multiply both the dummy's and the shared gradients, entry by entry, with ``sqrt(w_k)``
  on tensor k: for the L2 cost that is ``sum_k w_k ||g_k(x') - g_k||^2``, a Gaussian likelihood
  with one noise level per tensor, and for the cosine the same weighted inner product.
* :class:`Box` is the dummy's parametrisation: free (DLG's published one), clamped to the valid
  pixels after every step (GS's), or ``low + (high - low) sigmoid(v)``, which never leaves them.
* :func:`run_search` runs a :class:`Search` (an attack's restarts and their optimisers) for the
  budget: the frames, early stopping on the best restart's matching loss
  (:func:`~.result.stop_reason`), Ctrl-C (the best result so far is returned, marked
  ``interrupted``) and the progress bar.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from ..threat import Gradients, SharedUpdate
from .labels import infer_label
from .matching import masked, matching_masks
from .prior import representation_prior, total_variation
from .registry import check_eval_mode, public_defense, public_noise_std
from .result import stop_reason

def snr_weights(update: SharedUpdate) -> tuple[float, ...]:
    """Per tensor k, ``P_k / (P_k + sigma^2)`` with the signal power ``P_k = max(||g_k||^2 / n_k -
    sigma^2, 0)`` estimated from the shared tensor and the defense's known noise level sigma: 1 for
    a tensor the noise leaves readable, 0 for one that is noise alone (all 1 without noise)."""
    sigma = public_noise_std(update)
    if sigma == 0:
        return tuple(1.0 for _ in update.gradients)
    weights = []
    for g in update.gradients:
        power = max(float(g.double().pow(2).mean()) - sigma ** 2, 0.0)
        weights.append(power / (power + sigma ** 2))
    if not any(weights):
        raise ValueError("every shared tensor is noise alone at the defense's noise level")
    return tuple(weights)


def noise_energy(update: SharedUpdate, masks: Gradients | None) -> float:
    """What the L2 matching loss is expected to be at the private image: the defense's known noise
    variance summed over the entries matched, each weighed as the attacker weighs it (0 without noise)."""
    sigma = public_noise_std(update)
    if masks is None:
        return sigma ** 2 * sum(g.numel() for g in update.gradients)
    return sigma ** 2 * sum(float(m.double().pow(2).sum()) for m in masks)


@dataclass
class Problem:
    """The attack's view of one update: the shared gradients with its masks (or weights) applied,
    the masks themselves (None: every entry, equal weights), the labels (None: unknown), the prior
    (None: none) and the valid pixel range."""

    model: nn.Module
    update: SharedUpdate
    shared: Gradients
    masks: Gradients | None
    labels: torch.Tensor | None
    prior: Callable[[torch.Tensor], torch.Tensor] | None
    low: torch.Tensor
    high: torch.Tensor
    notes: dict = field(default_factory=dict)  # what the attack could not use, for its result's details
    # the defense's public, deterministic part (DP-SGD's per-example clipping), applied to the
    # dummy's per-example gradients (``mimic_defense``); None: the dummy's batch gradient as it is
    mimic: Callable[[Gradients], Gradients] | None = None


def prepare(model: nn.Module, update: SharedUpdate, config, attack: str, disclosed_labels: bool) -> Problem:
    """The problem of ``config``'s attacker (an :class:`~.registry.AttackSettings`). Labels: read off
    the gradient with ``infer_labels``; else the disclosed ones where the attack takes them
    (``disclosed_labels``); else None (the attack optimises them, as DLG does)."""
    check_eval_mode(model, attack)
    device = update.gradients[0].device
    shared = tuple(g.to(device) for g in update.gradients)
    masks = matching_masks(model, update, config.adaptive, config.ignored(model, update))
    notes = {}
    weights = None
    if config.layer_weights == "snr":
        try:
            weights = snr_weights(update)
        except ValueError as exc:  # no tensor stands out of the noise: match them all, equally
            notes["layer_weights"] = f"equal: {exc}"
    if weights is not None:
        roots = [math.sqrt(w) for w in weights]
        masks = tuple((torch.ones_like(g, dtype=torch.bool) if masks is None else masks[k]) * roots[k]
                      for k, g in enumerate(shared))
    if masks is not None:  # the shared side too: a no-op for the adaptive mask, drops ignored tensors
        masks = tuple(m.to(device, shared[0].dtype) for m in masks)
        shared = masked(shared, masks)
    if config.infer_labels:
        labels = infer_label(model, update, config.label_rule).to(device)
    else:
        labels = update.metadata.extra.get("labels") if disclosed_labels else None
        labels = None if labels is None else labels.to(device)
    try:
        prior = representation_prior(model, update, config.representation_prior, config.readout)
    except ValueError as exc:  # nothing to read (no bias gradient, or all of it noise): go on without
        prior, notes["prior"] = None, f"not used: {exc}"
    if config.image_prior:
        weight = config.image_prior * noise_energy(update, masks)
        if weight == 0:
            notes["image_prior"] = "not used: the update carries no noise"
        else:
            prior = _with_image_prior(prior, weight)
    meta = update.metadata
    low, high = meta.normalization.box(torch.zeros(meta.input_shape, device=device))  # (C, 1, 1)
    mimic = public_defense(update).public_part if config.mimic_defense else None
    return Problem(model, update, shared, masks, labels, prior, low, high, notes, mimic)


def _with_image_prior(prior, weight: float):
    """``x -> prior(x) + weight * TV(x)`` (the prior alone, None: none)."""
    if prior is None:
        return lambda x: weight * total_variation(x)
    return lambda x: prior(x) + weight * total_variation(x)


def dummy_gradients(mimic, params: list, loss_of, x: torch.Tensor, targets: torch.Tensor) -> Gradients:
    """The dummy batch's gradient as the attacker matches it, differentiable in ``x``:
    ``loss_of(x, targets)`` (a mean over the batch) differentiated with respect to ``params``, or,
    where the attacker mimics the defense's public part (``mimic``, :attr:`Problem.mimic`), each
    example's gradient put through it."""
    if mimic is None:
        return torch.autograd.grad(loss_of(x, targets), params, create_graph=True)
    per_example = [torch.autograd.grad(loss_of(x[n:n + 1], targets[n:n + 1]), params, create_graph=True)
                   for n in range(len(x))]
    return mimic(tuple(torch.stack(g) for g in zip(*per_example)))


@dataclass(frozen=True)
class Box:
    """How a dummy's variables ``v`` give its image: ``free`` (x = v), ``clamp`` (x = v, projected
    onto the valid pixels after every step) or ``sigmoid`` (x = low + (high - low) sigmoid(v))."""

    kind: str
    low: torch.Tensor
    high: torch.Tensor

    def image(self, v: torch.Tensor) -> torch.Tensor:
        if self.kind == "sigmoid":
            return self.low + (self.high - self.low) * torch.sigmoid(v)
        return v

    def variables(self, x: torch.Tensor) -> torch.Tensor:
        """The variables whose image is ``x`` (a start the attack is given); for ``sigmoid``, ``x`` is
        first brought 1e-6 of the box's range inside it, where the inverse is finite."""
        if self.kind != "sigmoid":
            return x.detach().clone()
        u = ((x.detach() - self.low) / (self.high - self.low)).clamp(1e-6, 1 - 1e-6)
        return torch.log(u) - torch.log1p(-u)

    def project_(self, groups: list[torch.Tensor]) -> None:
        """Clamp every group of variables in place (``clamp`` only)."""
        if self.kind != "clamp":
            return
        with torch.no_grad():
            for g in groups:
                g.copy_(torch.maximum(torch.minimum(g, self.high), self.low))


def first_variables(box: Box, drawn: torch.Tensor, start: torch.Tensor | None, config) -> torch.Tensor:
    """The dummies' first variables: the attacker's own draw ``drawn``, or, for every restart, those
    of the image ``start`` it is given (the attack's ``start_image``). ``config.start == "private"``
    needs one, the private image, which only :func:`~soteria_lib.pipeline.run_reconstruction` holds."""
    if start is None:
        if config.start == "private":
            raise ValueError("start='private' starts at the client's private image: run the attack through "
                             "soteria_lib.pipeline.run_reconstruction, which holds it")
        return drawn
    if tuple(start.shape) != tuple(drawn.shape[drawn.dim() - start.dim():]):
        raise ValueError(f"the start image has shape {tuple(start.shape)}, the dummy {tuple(drawn.shape)}")
    return box.variables(start.to(drawn.device)).expand_as(drawn).clone()


def unit_scale(gradient: torch.Tensor) -> torch.Tensor:
    """The constant ``1 / max |gradient|`` per restart (the first axis), as a tensor shaped to
    multiply it; 1 where the gradient is zero or not finite (``AttackSettings.unit_gradient``)."""
    scale = 1 / gradient.detach().abs().flatten(1).amax(1)  # inf where the peak is 0 (or denormal)
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
    return scale.view(-1, *([1] * (gradient.dim() - 1)))


class Search(Protocol):
    """An attack's restarts and their optimisers, as :func:`run_search` drives them."""

    def step(self) -> float:
        """One iteration of every restart; returns the matching loss recorded for it (the best restart's)."""

    def frame(self) -> torch.Tensor:
        """The image the attack would return if it stopped now."""

    def finish(self, interrupted: bool) -> tuple[torch.Tensor, torch.Tensor, float, dict]:
        """``(inputs, labels, matching loss, details)`` of the restart the attack returns."""


def run_search(search: Search, config, progress: bool, frame_every: int, description: str):
    """Drive ``search`` for ``config.max_iterations`` iterations; returns ``(inputs, labels, matching
    loss, iterations, losses, frames, interrupted, details)`` for a :class:`~.result.Reconstruction`."""
    losses, frames, interrupted, reason = [], [], False, "budget"
    bar = tqdm(range(config.max_iterations), desc=description, disable=not progress, leave=False)
    try:
        for step in bar:
            if frame_every and step % frame_every == 0:  # what the attack would return if stopped now
                frames.append((step, search.frame().detach().cpu().clone()))
            losses.append(search.step())
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            # diverged (NaN) always stops: the best finite point is kept
            reason = stop_reason(losses, config.stop_loss, config.patience) or reason
            if reason != "budget":
                break
    except KeyboardInterrupt:
        interrupted, reason = True, "interrupted"
    finally:
        bar.close()
    inputs, labels, loss, details = search.finish(interrupted)
    if frame_every:
        frames.append((len(losses), inputs.detach().cpu().clone()))
    return inputs, labels, loss, len(losses), losses, frames, interrupted, {**details, "stop_reason": reason}
