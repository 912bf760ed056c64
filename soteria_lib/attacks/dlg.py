"""DLG, Deep Leakage from Gradients (Zhu et al., NeurIPS 2019).

The attacker draws dummy data ``x'`` and dummy label logits ``y'`` from N(0, 1) and solves

    min_{x', y'}  sum_k || dL(F(x'), softmax(y')) / dtheta_k  -  g_k ||_2^2          (DLG eq. 4)

over every parameter tensor k, where ``g`` is the shared gradient and ``L`` the soft-label
cross-entropy, with L-BFGS (PyTorch defaults, ``lr = 1``). With ``infer_label=True`` the
label is read from the gradient (iDLG) and only ``x'`` is optimised.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..threat import SharedUpdate
from .base import BestSoFar, Reconstruction, infer_label, matching_masks, register_attack

SCALES = {"teaching": 100, "paper": 300}


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """mean_b sum_c -t_bc log softmax(logits)_bc; equals F.cross_entropy for one-hot targets."""
    return torch.mean(torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1))


def gradient_distance(dummy: tuple[torch.Tensor, ...], shared: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Squared L2 distance summed over all parameter tensors."""
    return sum(((d - s) ** 2).sum() for d, s in zip(dummy, shared))


@register_attack("dlg", scales=SCALES)
def dlg(model: nn.Module, update: SharedUpdate, max_iterations: int = SCALES["teaching"],
        lr: float = 1.0, infer_labels: bool = False, seed: int = 0, progress: bool = True,
        frame_every: int = 0, adaptive: bool = False, ignore_parameters: Sequence[str] = (),
        label_rule: str = "weight") -> Reconstruction:
    """Run DLG for ``max_iterations`` outer L-BFGS steps; Ctrl-C returns the best result so far.

    ``frame_every > 0`` records the current dummy image every that many steps. ``adaptive``
    makes the attacker mask-aware: entries that are exactly zero in the shared update are left
    out of the matching loss (see :func:`~soteria_lib.attacks.base.visible_masks`).
    ``ignore_parameters`` (names as in ``model.named_parameters()``, e.g. ``("fc.weight",)``)
    leaves those gradients out of the matching loss altogether (see
    :func:`~soteria_lib.attacks.base.matching_masks`). ``label_rule`` picks iDLG's rule
    (``"weight"`` or ``"bias"``) when ``infer_labels`` is set.
    """
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    meta = update.metadata
    device = update.gradients[0].device
    params = list(model.parameters())
    masks = matching_masks(model, update, adaptive, ignore_parameters)
    if masks is not None:
        masks = tuple(m.to(device) for m in masks)
    shared = tuple(g.to(device) for g in update.gradients)
    if masks is not None:  # a no-op for the adaptive mask (zero where the update is); drops ignored tensors
        shared = tuple(s * m for s, m in zip(shared, masks))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (meta.batch_size, *meta.input_shape)
    dummy_x = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
    dummy_y = torch.randn((meta.batch_size, meta.num_classes), generator=generator).to(device)
    if infer_labels:
        fixed = F.one_hot(infer_label(model, update, label_rule).to(device), meta.num_classes).float()
        variables = [dummy_x]
        targets = lambda: fixed  # noqa: E731
    else:
        dummy_y.requires_grad_(True)
        variables = [dummy_x, dummy_y]
        targets = lambda: F.softmax(dummy_y, dim=-1)  # noqa: E731
    optimizer = torch.optim.LBFGS(variables, lr=lr)

    def closure():
        optimizer.zero_grad()
        loss = soft_cross_entropy(model(dummy_x), targets())
        dummy_grads = torch.autograd.grad(loss, params, create_graph=True)
        if masks is not None:
            dummy_grads = tuple(d * m for d, m in zip(dummy_grads, masks))
        distance = gradient_distance(dummy_grads, shared)
        distance.backward()
        return distance.detach()

    best, losses, frames = BestSoFar(), [], []
    interrupted = False
    bar = tqdm(range(max_iterations), desc="DLG", disable=not progress, leave=False)
    try:
        for step in bar:
            if frame_every and step % frame_every == 0:
                frames.append((step, dummy_x.detach().cpu().clone()))
            start_x, start_y = dummy_x.detach().clone(), targets().detach().argmax(-1)
            loss = float(optimizer.step(closure))
            best.offer(loss, start_x, start_y)  # L-BFGS returns the loss at the step's start
            losses.append(loss)
            bar.set_postfix(loss=f"{loss:.3g}")
            if loss != loss:  # NaN: the optimisation diverged; keep the best finite point
                break
        with torch.enable_grad():
            best.offer(float(closure()), dummy_x, targets().argmax(-1))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if best.inputs is None:  # interrupted before any evaluation, or no finite loss at all
        best.inputs, best.labels = dummy_x.detach().clone(), targets().detach().argmax(-1)
    if frame_every:
        frames.append((len(losses), best.inputs.cpu().clone()))
    return Reconstruction(best.inputs, best.labels, best.loss, len(losses), losses, frames, interrupted)
