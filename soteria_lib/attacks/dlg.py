"""DLG, Deep Leakage from Gradients (Zhu et al., NeurIPS 2019). Chapter 2.

The attacker draws dummy data ``x'`` and dummy label logits ``y'`` from N(0, 1) and solves

    min_{x', y'}  sum_k || dL(F(x'), softmax(y')) / dtheta_k  -  g_k ||_2^2          (DLG eq. 4)

over every parameter tensor k, where ``g`` is the shared gradient and ``L`` the soft-label
cross-entropy, with L-BFGS (PyTorch defaults, ``lr = 1``). With ``infer_labels=True`` the
label is read from the gradient (iDLG) and only ``x'`` is optimised. The closed-form attacker
adds ``representation_prior`` times the prior (8.3) of :mod:`~soteria_lib.attacks.prior` to the
distance. Settings: :class:`DLGConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..scales import SCALES
from ..threat import SharedUpdate
from .labels import LABEL_RULES, infer_label
from .matching import l2_cost, masked, matching_masks
from .prior import representation_prior
from .registry import AttackSettings, attack_info, check_eval_mode, check_finite, register_attack
from .result import BestSoFar, Reconstruction, stop_reason


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """mean_n sum_c -t_nc log softmax(logits)_nc; equals F.cross_entropy for one-hot targets."""
    return torch.mean(torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1))


@dataclass(frozen=True)
class DLGConfig(AttackSettings):
    """DLG's settings (the shared ones: :class:`~soteria_lib.attacks.registry.AttackSettings`).
    ``max_iterations``: outer L-BFGS steps (default: the teaching budget); ``lr``: L-BFGS's step;
    ``label_rule``: iDLG's rule (``"weight"`` or ``"bias"``) when ``infer_labels`` is set."""

    max_iterations: int = SCALES["teaching"].attacks["dlg"].iterations
    lr: float = 1.0
    label_rule: str = "weight"

    def __post_init__(self):
        super().__post_init__()
        check_finite("lr", self.lr)
        if self.label_rule not in LABEL_RULES:
            raise ValueError(f"unknown label rule {self.label_rule!r}; choose one of {list(LABEL_RULES)}")


@register_attack("dlg", config=DLGConfig, model="lenet", normalize=False, train_split=True, labels_known=False)
def dlg(model: nn.Module, update: SharedUpdate, config: DLGConfig | None = None, *, seed: int = 0,
        progress: bool = True, frame_every: int = 0, **settings) -> Reconstruction:
    """Run DLG for ``config.max_iterations`` outer L-BFGS steps; Ctrl-C returns the best result
    so far. ``settings`` override fields of ``config`` (``dlg(model, update, max_iterations=50)``).
    ``frame_every > 0`` records, every that many steps, the image the attack would return if it
    stopped there: the best so far (the random start before the first step)."""
    config = attack_info("dlg").configure(config, **settings)
    check_eval_mode(model, "dlg")
    meta = update.metadata
    device = update.gradients[0].device
    params = list(model.parameters())
    masks = matching_masks(model, update, config.adaptive, config.ignored(model))
    if masks is not None:
        masks = tuple(m.to(device) for m in masks)
    prior = representation_prior(model, update, config.representation_prior)
    # masking the shared side too is a no-op for the adaptive mask (zero where the update is) and
    # drops ignored tensors
    shared = masked(tuple(g.to(device) for g in update.gradients), masks)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (meta.batch_size, *meta.input_shape)
    dummy_x = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
    dummy_y = torch.randn((meta.batch_size, meta.num_classes), generator=generator).to(device)
    if config.infer_labels:
        fixed = F.one_hot(infer_label(model, update, config.label_rule).to(device), meta.num_classes).float()
        variables = [dummy_x]
        targets = lambda: fixed  # noqa: E731
    else:
        dummy_y.requires_grad_(True)
        variables = [dummy_x, dummy_y]
        targets = lambda: F.softmax(dummy_y, dim=-1)  # noqa: E731
    optimizer = torch.optim.LBFGS(variables, lr=config.lr)

    def closure():
        optimizer.zero_grad()
        loss = soft_cross_entropy(model(dummy_x), targets())
        dummy_grads = masked(torch.autograd.grad(loss, params, create_graph=True), masks)
        distance = l2_cost(dummy_grads, shared)
        if prior is not None:
            distance = distance + prior(dummy_x)
        distance.backward()
        return distance.detach()

    best, losses, frames = BestSoFar(), [], []
    interrupted, reason = False, "budget"
    bar = tqdm(range(config.max_iterations), desc="DLG", disable=not progress, leave=False)
    try:
        for step in bar:
            if frame_every and step % frame_every == 0:  # what the attack would return if stopped now
                frames.append((step, (dummy_x if best.inputs is None else best.inputs).detach().cpu().clone()))
            start_x, start_y = dummy_x.detach().clone(), targets().detach().argmax(-1)
            loss = float(optimizer.step(closure))
            best.offer(loss, start_x, start_y)  # L-BFGS returns the loss at the step's start
            losses.append(loss)
            bar.set_postfix(loss=f"{loss:.3g}")
            # diverged (NaN) always stops: the best finite point is kept
            reason = stop_reason(losses, config.stop_loss, config.patience) or reason
            if reason != "budget":
                break
        with torch.enable_grad():
            best.offer(float(closure()), dummy_x, targets().argmax(-1))
    except KeyboardInterrupt:
        interrupted, reason = True, "interrupted"
    finally:
        bar.close()
    if best.inputs is None:  # interrupted before any evaluation, or no finite loss at all
        best.inputs, best.labels = dummy_x.detach().clone(), targets().detach().argmax(-1)
    if frame_every:
        frames.append((len(losses), best.inputs.cpu().clone()))
    return Reconstruction(best.inputs, best.labels, best.loss, len(losses), losses, frames, interrupted,
                          {"stop_reason": reason})
