"""GS, "Inverting Gradients" (Geiping et al., NeurIPS 2020), as Soteria's authors ran it. Chapter 3.

The attacker is given the label ``y`` (or reads it from the gradient, iDLG) and draws ``R``
dummy batches ``x'_r ~ N(0, 1)`` in the dataset's normalised space. Every restart ``r`` solves

    min_{x'}  C(g(x'), g) + lambda_TV TV(x'),     g(x') = dL(F(x'), y) / dtheta       (GS eq. 4)

    C_sim(g', g) = 1 - <g', g> / (||g'|| ||g||)                                          (1)
    C_l2(g', g)  = ||g' - g||^2                                                           (2)
    TV(x) = mean |x[.., i, j+1] - x[.., i, j]| + mean |x[.., i+1, j] - x[.., i, j]|         (3)

where ``g`` is the shared gradient and the inner products and norms run over **all parameter
tensors concatenated** (one cosine, equal weights). Adam (lr 0.1) is fed the **sign** of the
image gradient, the learning rate drops x0.1 at about 3/8, 5/8 and 7/8 of the iterations
(the published divisors 2.667, 1.6 and 1.142), and after every step the image is clamped to
the box of valid pixels ``[(0 - m_c) / s_c, (1 - m_c) / s_c]``. The restart with the lowest
final matching cost ``C`` (TV left out, finite values only) is returned: the ground truth is
never consulted.

**Batched restarts.** ``torch.func.vmap`` maps the per-restart cost over the stack of
restarts; inside it ``torch.func.grad`` of the ``functional_call`` loss gives every restart its
own parameter gradient ``g(x'_r)``. One reverse pass of ordinary autograd through that batched
graph then yields the image gradients: the restarts do not interact, so the gradient of
``sum_r cost_r`` with respect to ``x'_r`` is restart ``r``'s own. Adam and SGD act on each
pixel separately, so one optimiser over the ``(R, B, C, H, W)`` stack equals ``R`` independent
ones. ``batched=False`` computes the same gradients restart by restart with plain autograd: the
reference for the batched path, and the default where it is faster (:func:`batch_restarts`).
L-BFGS mixes coordinates, so it always gets one optimiser per restart (no batching gain) and
the true, unsigned gradient; one iteration is one gradient evaluation
for every optimiser (``max_iter=1`` for L-BFGS).

The client's loss is the mean cross-entropy; the published client used ``0.5 * CE``, which
changes nothing for the cosine (1) but does for (2). Settings: :class:`GSConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..scales import SCALES
from ..threat import Gradients, SharedUpdate
from .labels import infer_label
from .matching import cosine_cost, l2_cost, masked, matching_masks
from .prior import representation_prior
from .registry import (AttackSettings, attack_info, check_count, check_eval_mode, check_finite,
                       register_attack)
from .result import Reconstruction, stop_reason

MILESTONE_DIVISORS = (2.667, 1.6, 1.142)
COSTS: dict[str, Callable[[Gradients, Gradients], torch.Tensor]] = {"sim": cosine_cost, "l2": l2_cost}


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Equation (3): anisotropic TV with means of absolute neighbour differences, (.., H, W) input."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build an optimiser; ``elementwise`` ones treat pixels separately and take the sign."""

    build: Callable[[list[torch.Tensor], float], torch.optim.Optimizer]
    lr: float
    elementwise: bool


OPTIMIZERS = {
    "adam": OptimizerSpec(lambda params, lr: torch.optim.Adam(params, lr=lr), 0.1, True),
    "sgd": OptimizerSpec(lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
                         0.01, True),
    "lbfgs": OptimizerSpec(lambda params, lr: torch.optim.LBFGS(params, lr=lr, max_iter=1), 1.0, False),
}


def milestones(iterations: int) -> list[int]:
    """Iterations after which the learning rate drops x0.1: 8998, 14999, 21015 for 24,000."""
    return [int(iterations // d) for d in MILESTONE_DIVISORS]


class Objective:
    """Cost (1) or (2), masked for the adaptive attacker, plus ``tv`` times (3) and the closed-form
    attacker's ``prior`` (:mod:`~soteria_lib.attacks.prior`), for a stack of restarts ``x`` shaped
    (R, B, C, H, W). Both methods return ``(d total / dx, total, matching)`` with one value per
    restart."""

    def __init__(self, model: nn.Module, shared: Gradients, labels: torch.Tensor, cost: str, tv: float,
                 masks: Gradients | None = None, prior: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model, self.shared, self.labels = model, shared, labels
        self.cost, self.tv, self.masks, self.prior = COSTS[cost], tv, masks, prior
        self.params = {name: p.detach() for name, p in model.named_parameters()}
        self.buffers = {name: b.detach() for name, b in model.named_buffers()}
        self._vmapped = vmap(self._restart_cost)

    def _terms(self, dummy: Gradients, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        matching = self.cost(masked(dummy, self.masks), self.shared)
        total = matching + self.tv * total_variation(x)
        return (total if self.prior is None else total + self.prior(x)), matching

    def _restart_cost(self, x: torch.Tensor):
        def loss(params):
            return F.cross_entropy(functional_call(self.model, (params, self.buffers), (x,)), self.labels)

        return self._terms(tuple(grad(loss)(self.params).values()), x)

    def batched(self, x: torch.Tensor):
        """All restarts in one vmapped pass (per-restart parameter gradients via torch.func)."""
        x = x.detach().requires_grad_(True)
        total, matching = self._vmapped(x)
        return torch.autograd.grad(total.sum(), x)[0], total.detach(), matching.detach()

    def sequential(self, x: torch.Tensor):
        """Restart by restart with plain autograd."""
        params = list(self.model.parameters())
        results = []
        for xr in x.detach():
            xr = xr.clone().requires_grad_(True)
            loss = F.cross_entropy(self.model(xr), self.labels)
            dummy = torch.autograd.grad(loss, params, create_graph=True)
            total, matching = self._terms(dummy, xr)
            results.append((torch.autograd.grad(total, xr)[0], total.detach(), matching.detach()))
        dx, total, matching = zip(*results)
        return torch.stack(dx), torch.stack(total), torch.stack(matching)


def _labels(model: nn.Module, update: SharedUpdate, infer_labels: bool) -> torch.Tensor:
    if infer_labels:
        return infer_label(model, update)
    known = update.metadata.extra.get("labels")
    if known is None:
        raise ValueError("GS is given the true labels: share the update with disclose_labels=True, "
                         "or pass infer_labels=True to read them from the gradient (iDLG)")
    return known


# Below this many parameters, vmapping R > 1 restarts beats running them one by one on a CPU
# (bench/gs_restarts.py, 2 cores, R = 4: 1.29x at width 16, about 180k parameters; 0.94x at width
# 64, about 2.9M). With one restart the plain path is the faster (bench/gs_inversefed.py).
BATCHED_CPU_PARAMETERS = 1_000_000


def batch_restarts(model: nn.Module, restarts: int, device: torch.device) -> bool:
    """The evaluation path chosen by measurement: vmapped restarts when there are several and they
    run on a GPU, or on a CPU for a model small enough to gain from it; else restart by restart."""
    if restarts == 1:
        return False
    return device.type == "cuda" or sum(p.numel() for p in model.parameters()) < BATCHED_CPU_PARAMETERS


@dataclass(frozen=True)
class GSConfig(AttackSettings):
    """GS's settings (the shared ones: :class:`~soteria_lib.attacks.registry.AttackSettings`).
    ``max_iterations`` defaults to the teaching budget; ``restarts`` independent dummies; ``tv``
    weighs the total variation (3); ``cost_fn`` is ``sim`` (1) or ``l2`` (2); ``optimizer`` is
    ``adam``, ``sgd`` or ``lbfgs`` with its own default ``lr`` unless one is given; ``signed``
    feeds Adam and SGD the sign of the gradient (the published set-up); ``batched`` evaluates the
    restarts in one vmapped pass (``None``: :func:`batch_restarts` decides). Early stopping acts on
    the best restart's matching cost."""

    max_iterations: int = SCALES["teaching"].attacks["gs"].iterations
    restarts: int = 1
    tv: float = 1e-4
    cost_fn: str = "sim"
    optimizer: str = "adam"
    lr: float | None = None
    signed: bool = True
    batched: bool | None = None

    def __post_init__(self):
        super().__post_init__()
        check_count("restarts", self.restarts, 1)
        check_finite("tv", self.tv, positive=False)
        if self.lr is not None:
            check_finite("lr", self.lr)
        if self.cost_fn not in COSTS:
            raise ValueError(f"unknown cost_fn {self.cost_fn!r}; choose one of {sorted(COSTS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")


@register_attack("gs", config=GSConfig, model="convnet", normalize=True, train_split=False, labels_known=True)
def gs(model: nn.Module, update: SharedUpdate, config: GSConfig | None = None, *, seed: int = 0,
       progress: bool = True, frame_every: int = 0, **settings) -> Reconstruction:
    """Run GS with ``config.restarts`` dummies for ``config.max_iterations`` steps each; Ctrl-C
    stops early and still returns the best restart's current image. ``settings`` override fields
    of ``config`` (``gs(model, update, restarts=4)``). ``frame_every > 0`` records the image of the
    currently best restart every that many steps. ``details`` of the result hold ``restarts``,
    ``best_restart`` and every restart's final matching cost.
    """
    config = attack_info("gs").configure(config, **settings)
    check_eval_mode(model, "gs")
    max_iterations, restarts, signed = config.max_iterations, config.restarts, config.signed
    spec = OPTIMIZERS[config.optimizer]
    meta = update.metadata
    device = update.gradients[0].device
    shared = tuple(g.to(device) for g in update.gradients)
    masks = matching_masks(model, update, config.adaptive, config.ignored(model))
    if masks is not None:  # the shared side too: a no-op for the adaptive mask, drops ignored tensors
        masks = tuple(m.to(device, shared[0].dtype) for m in masks)
        shared = masked(shared, masks)
    labels = _labels(model, update, config.infer_labels).to(device)
    prior = representation_prior(model, update, config.representation_prior)
    objective = Objective(model, shared, labels, config.cost_fn, config.tv, masks, prior)
    batched = batch_restarts(model, restarts, device) if config.batched is None else config.batched
    evaluate = objective.batched if batched else objective.sequential

    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = torch.randn((restarts, meta.batch_size, *meta.input_shape), generator=generator).to(device)
    low, high = meta.normalization.box(start[0, 0])
    # Elementwise optimisers: one over the whole stack. L-BFGS: one per restart.
    groups = [start] if spec.elementwise else list(start.split(1))
    groups = [g.clone().requires_grad_(True) for g in groups]
    optimizers = [spec.build([g], spec.lr if config.lr is None else config.lr) for g in groups]
    schedulers = [torch.optim.lr_scheduler.MultiStepLR(o, milestones(max_iterations), gamma=0.1)
                  for o in optimizers]
    current = torch.full((restarts,), float("nan"))
    offsets = [sum(len(g) for g in groups[:i]) for i in range(len(groups))]

    def closure_for(index: int):
        x, offset = groups[index], offsets[index]

        def closure():
            dx, total, matching = evaluate(x)
            x.grad = dx.sign() if signed and spec.elementwise else dx
            current[offset:offset + len(x)] = matching.cpu()
            return total.sum()
        return closure

    closures = [closure_for(i) for i in range(len(groups))]
    losses, frames, steps, interrupted, reason = [], [], 0, False, "budget"
    bar = tqdm(range(max_iterations), desc=f"GS x{restarts}", disable=not progress, leave=False)
    try:
        for step in bar:
            if frame_every and step % frame_every == 0:
                frames.append((step, torch.cat(groups)[_best(current)].detach().cpu().clone()))
            for opt, sched, closure in zip(optimizers, schedulers, closures):
                opt.step(closure)
                sched.step()
            _clamp(groups, low, high)
            steps += 1
            losses.append(float(current[_best(current)]))
            bar.set_postfix(cost=f"{losses[-1]:.4g}")
            reason = stop_reason(losses, config.stop_loss, config.patience) or reason
            if reason != "budget":
                break
    except KeyboardInterrupt:
        interrupted, reason = True, "interrupted"
    finally:
        bar.close()
    _clamp(groups, low, high)  # a step cut short by Ctrl-C may have left the box
    with torch.enable_grad():
        final = torch.cat([evaluate(g)[2] for g in groups]).cpu()
    best = _best(final)
    images = torch.cat(groups).detach()
    if frame_every:
        frames.append((steps, images[best].cpu().clone()))
    details = {"restarts": restarts, "best_restart": best, "batched": batched, "stop_reason": reason,
               "restart_matching_losses": [float(v) for v in final]}
    return Reconstruction(images[best].clone(), labels.clone(), float(final[best]), steps, losses, frames,
                          interrupted, details)


def _clamp(groups: list[torch.Tensor], low: torch.Tensor, high: torch.Tensor) -> None:
    with torch.no_grad():
        for g in groups:
            g.copy_(torch.maximum(torch.minimum(g, high), low))


def _best(costs: torch.Tensor) -> int:
    """Index of the lowest finite cost (restart 0 when none is finite)."""
    finite = torch.where(torch.isfinite(costs), costs, torch.full_like(costs, float("inf")))
    return int(torch.argmin(finite)) if torch.isfinite(finite).any() else 0
