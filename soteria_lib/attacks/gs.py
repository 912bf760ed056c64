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

from ..scales import SCALES
from ..threat import Gradients, SharedUpdate
from .loop import Box, Problem, dummy_gradients, first_variables, prepare, run_search, unit_scale
from .matching import COSTS, masked
from .prior import total_variation
from .registry import AttackSettings, attack_info, check_finite, register_attack
from .result import Reconstruction

MILESTONE_DIVISORS = (2.667, 1.6, 1.142)


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
    restart. ``mimic``: the defense's public part (:func:`~.loop.dummy_gradients`), sequential
    path only."""

    def __init__(self, model: nn.Module, shared: Gradients, labels: torch.Tensor, cost: str, tv: float,
                 masks: Gradients | None = None, prior: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 image: Callable[[torch.Tensor], torch.Tensor] = lambda v: v, mimic=None):
        self.model, self.shared, self.labels, self.mimic = model, shared, labels, mimic
        self.cost, self.tv, self.masks, self.prior, self.image = COSTS[cost], tv, masks, prior, image
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

    def batched(self, v: torch.Tensor):
        """All restarts in one vmapped pass (per-restart parameter gradients via torch.func); the
        gradient is taken with respect to the dummy's variables ``v`` (the image is ``image(v)``)."""
        v = v.detach().requires_grad_(True)
        total, matching = self._vmapped(self.image(v))
        return torch.autograd.grad(total.sum(), v)[0], total.detach(), matching.detach()

    def sequential(self, v: torch.Tensor):
        """Restart by restart with plain autograd."""
        params = list(self.model.parameters())
        results = []
        for vr in v.detach():
            vr = vr.clone().requires_grad_(True)
            xr = self.image(vr)
            dummy = dummy_gradients(self.mimic, params, lambda x, y: F.cross_entropy(self.model(x), y), xr,
                                    self.labels)
            total, matching = self._terms(dummy, xr)
            results.append((torch.autograd.grad(total, vr)[0], total.detach(), matching.detach()))
        dx, total, matching = zip(*results)
        return torch.stack(dx), torch.stack(total), torch.stack(matching)


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
    ``max_iterations`` defaults to the teaching budget; ``tv`` weighs the total variation (3); the
    shared ``cost_fn`` is ``sim`` (1, GS's default) or ``l2`` (2); ``optimizer`` is ``adam``, ``sgd``
    or ``lbfgs`` with its own default ``lr`` unless one is given; ``signed``
    feeds Adam and SGD the sign of the gradient (the published set-up); ``batched`` evaluates the
    restarts in one vmapped pass (``None``: :func:`batch_restarts` decides). Early stopping acts on
    the best restart's matching cost."""

    max_iterations: int = SCALES["teaching"].attacks["gs"].iterations
    tv: float = 1e-4
    optimizer: str = "adam"
    lr: float | None = None
    signed: bool = True
    batched: bool | None = None

    def __post_init__(self):
        super().__post_init__()
        check_finite("tv", self.tv, positive=False)
        if self.lr is not None:
            check_finite("lr", self.lr)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")


class GSSearch:
    """GS's restarts: one stack of dummies under one elementwise optimiser (signed Adam or SGD), or
    one L-BFGS per restart, with the learning-rate schedule; the restart with the lowest final
    matching cost is returned."""

    def __init__(self, problem: Problem, config: GSConfig, generator: torch.Generator, start_image: torch.Tensor | None):
        if problem.labels is None:
            raise ValueError("GS is given the true labels: share the update with disclose_labels=True, "
                             "or pass infer_labels=True to read them from the gradient (iDLG)")
        meta, device = problem.update.metadata, problem.shared[0].device
        self.box, self.labels = Box(config.box or "clamp", problem.low, problem.high), problem.labels
        objective = Objective(problem.model, problem.shared, problem.labels, config.cost_fn or "sim", config.tv,
                              problem.masks, problem.prior, self.box.image, problem.mimic)
        # a mimicked defense needs per-example gradients: the sequential path
        self.batched = problem.mimic is None and (batch_restarts(problem.model, config.restarts, device)
                                                  if config.batched is None else config.batched)
        self.evaluate = objective.batched if self.batched else objective.sequential
        spec = OPTIMIZERS[config.optimizer]
        drawn = torch.randn((config.restarts, meta.batch_size, *meta.input_shape), generator=generator).to(device)
        start = first_variables(self.box, drawn, start_image, config)
        # Elementwise optimisers: one over the whole stack. L-BFGS: one per restart.
        groups = [start] if spec.elementwise else list(start.split(1))
        self.groups = [g.clone().requires_grad_(True) for g in groups]
        self.optimizers = [spec.build([g], spec.lr if config.lr is None else config.lr) for g in self.groups]
        self.schedulers = [torch.optim.lr_scheduler.MultiStepLR(o, milestones(config.max_iterations), gamma=0.1)
                           for o in self.optimizers]
        self.current = torch.full((config.restarts,), float("nan"))
        offsets = [sum(len(g) for g in self.groups[:i]) for i in range(len(self.groups))]
        signed = config.signed and spec.elementwise
        with torch.enable_grad():  # unit_gradient's constants, one per restart, from the start
            scale = (unit_scale(self.evaluate(start)[0]).flatten() if config.unit_gradient
                     else torch.ones(len(start), device=device))
        self.closures = [self._closure(g, offset, signed, scale[offset:offset + len(g)])
                         for g, offset in zip(self.groups, offsets)]

    def _closure(self, x: torch.Tensor, offset: int, signed: bool, scale: torch.Tensor):
        """The objective as the optimiser sees it: each restart's times its ``scale``."""
        def closure():
            dx, total, matching = self.evaluate(x)
            x.grad = dx.sign() if signed else dx * scale.view(-1, *([1] * (dx.dim() - 1)))
            self.current[offset:offset + len(x)] = matching.cpu()
            return (total * scale).sum()
        return closure

    def step(self) -> float:
        for opt, sched, closure in zip(self.optimizers, self.schedulers, self.closures):
            opt.step(closure)
            sched.step()
        self.box.project_(self.groups)
        return float(self.current[_best(self.current)])

    def frame(self) -> torch.Tensor:
        return self.box.image(torch.cat(self.groups)[_best(self.current)].detach())

    def finish(self, interrupted: bool):
        self.box.project_(self.groups)  # a step cut short by Ctrl-C may have left the box
        with torch.enable_grad():
            final = torch.cat([self.evaluate(g)[2] for g in self.groups]).cpu()
        best = _best(final)
        images = self.box.image(torch.cat(self.groups).detach())
        details = {"restarts": len(final), "best_restart": best, "batched": self.batched,
                   "restart_matching_losses": [float(v) for v in final]}
        return images[best].clone(), self.labels.clone(), float(final[best]), details


@register_attack("gs", config=GSConfig, model="convnet", normalize=True, train_split=False, labels_known=True)
def gs(model: nn.Module, update: SharedUpdate, config: GSConfig | None = None, *, seed: int = 0,
       progress: bool = True, frame_every: int = 0, start_image: torch.Tensor | None = None, **settings) -> Reconstruction:
    """Run GS with ``config.restarts`` dummies for ``config.max_iterations`` steps each; Ctrl-C
    stops early and still returns the best restart's current image. ``settings`` override fields
    of ``config`` (``gs(model, update, restarts=4)``). ``frame_every > 0`` records the image of the
    currently best restart every that many steps. ``start_image``: an image every restart starts at,
    instead of a random draw. ``details`` of the result hold ``restarts``,
    ``best_restart`` and every restart's final matching cost.
    """
    config = attack_info("gs").configure(config, **settings)
    problem = prepare(model, update, config, "gs", disclosed_labels=True)
    search = GSSearch(problem, config, torch.Generator(device="cpu").manual_seed(seed), start_image)
    result = Reconstruction(*run_search(search, config, progress, frame_every, f"GS x{config.restarts}"))
    result.details.update(problem.notes)
    return result


def _best(costs: torch.Tensor) -> int:
    """Index of the lowest finite cost (restart 0 when none is finite)."""
    finite = torch.where(torch.isfinite(costs), costs, torch.full_like(costs, float("inf")))
    return int(torch.argmin(finite)) if torch.isfinite(finite).any() else 0
