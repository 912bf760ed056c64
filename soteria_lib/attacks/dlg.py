"""DLG, Deep Leakage from Gradients (Zhu et al., NeurIPS 2019). Chapter 2.

The attacker draws dummy data ``x'`` and dummy label logits ``y'`` from N(0, 1) and solves

    min_{x', y'}  sum_k || dL(F(x'), softmax(y')) / dtheta_k  -  g_k ||_2^2          (DLG eq. 4)

over every parameter tensor k, where ``g`` is the shared gradient and ``L`` the soft-label
cross-entropy, with L-BFGS (PyTorch defaults, ``lr = 1``). With ``infer_labels=True`` the
label is read from the gradient (iDLG) and only ``x'`` is optimised. The closed-form attacker
adds ``representation_prior`` times the prior (8.3) of :mod:`~soteria_lib.attacks.prior` to the
distance. The stronger DLG of chapter 8 adds ``infer_labels``, ``box="sigmoid"`` (the dummy never
leaves the valid pixels) and ``restarts`` chosen by their matching loss. Masks, weights, labels,
prior, box, early stopping and restarts come from the loop all attacks share (:mod:`.loop`).
Settings: :class:`DLGConfig`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..scales import SCALES
from ..threat import SharedUpdate
from .loop import Box, Problem, dummy_gradients, first_variables, prepare, run_search, unit_scale
from .matching import COSTS, masked
from .registry import AttackSettings, attack_info, check_finite, register_attack
from .result import BestSoFar, Reconstruction


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """mean_n sum_c -t_nc log softmax(logits)_nc; equals F.cross_entropy for one-hot targets."""
    return torch.mean(torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1))


LINE_SEARCHES = (None, "strong_wolfe")


@dataclass(frozen=True)
class DLGConfig(AttackSettings):
    """DLG's settings (the shared ones: :class:`~soteria_lib.attacks.registry.AttackSettings`).
    ``max_iterations``: outer L-BFGS steps (default: the teaching budget); ``lr``: L-BFGS's step;
    ``line_search``: None (the published attack: a fixed step, which can raise the loss) or
    ``"strong_wolfe"`` (every step lowers it; chapter 5's oracle start)."""

    max_iterations: int = SCALES["teaching"].attacks["dlg"].iterations
    lr: float = 1.0
    line_search: str | None = None

    def __post_init__(self):
        super().__post_init__()
        check_finite("lr", self.lr)
        if self.line_search not in LINE_SEARCHES:
            raise ValueError(f"unknown line_search {self.line_search!r}; choose one of {[s for s in LINE_SEARCHES if s]}")


def matching_objective(problem: Problem, cost, params: list, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """DLG eq. 4 at ``(x, targets)``, as this attacker sees it: the distance ``cost`` of the dummy's
    (masked, weighted) gradient to the shared one, plus the prior where the attacker has one."""
    dummy = dummy_gradients(problem.mimic, params, lambda x, t: soft_cross_entropy(problem.model(x), t), x, targets)
    distance = cost(masked(dummy, problem.masks), problem.shared)
    return distance if problem.prior is None else distance + problem.prior(x)


class DLGSearch:
    """DLG's restarts: each its own dummy (image and, unless the label is known, label logits) and
    its own L-BFGS, keeping the best point it has seen (L-BFGS returns the loss at the step's start)."""

    def __init__(self, problem: Problem, config: DLGConfig, generator: torch.Generator, start_image: torch.Tensor | None):
        meta = problem.update.metadata
        self.problem, self.box = problem, Box(config.box or "free", problem.low, problem.high)
        self.params = list(problem.model.parameters())
        self.cost = COSTS[config.cost_fn or "l2"]
        device = problem.shared[0].device
        self.restarts = []
        for _ in range(config.restarts):
            drawn = torch.randn((meta.batch_size, *meta.input_shape), generator=generator).to(device)
            v = first_variables(self.box, drawn, start_image, config).requires_grad_(True)
            logits = torch.randn((meta.batch_size, meta.num_classes), generator=generator).to(device)
            if problem.labels is not None:
                fixed = F.one_hot(problem.labels, meta.num_classes).float()
                variables, targets = [v], (lambda fixed=fixed: fixed)
            else:
                logits.requires_grad_(True)
                variables, targets = [v, logits], (lambda logits=logits: F.softmax(logits, dim=-1))
            optimizer = torch.optim.LBFGS(variables, lr=config.lr, line_search_fn=config.line_search)
            scale = self._scale(v, targets) if config.unit_gradient else 1.0
            self.restarts.append((v, targets, optimizer, self._closure(v, targets, optimizer, scale), BestSoFar(), scale))

    def _objective(self, v, targets) -> torch.Tensor:
        return matching_objective(self.problem, self.cost, self.params, self.box.image(v), targets())

    def _scale(self, v, targets) -> float:
        """``unit_gradient``'s constant for a restart, from its image's gradient at the start."""
        with torch.enable_grad():
            gradient = torch.autograd.grad(self._objective(v, targets), v)[0]
        return float(unit_scale(gradient.unsqueeze(0)))

    def _closure(self, v, targets, optimizer, scale: float):
        """The objective as L-BFGS sees it: times ``scale`` (divided out again wherever it is recorded)."""
        def closure():
            optimizer.zero_grad()
            distance = self._objective(v, targets) * scale
            distance.backward()
            return distance.detach()
        return closure

    def step(self) -> float:
        losses = []
        for v, targets, optimizer, closure, best, scale in self.restarts:
            start_x, start_y = self.box.image(v).detach().clone(), targets().detach().argmax(-1)
            loss = float(optimizer.step(closure)) / scale
            best.offer(loss, start_x, start_y)
            self.box.project_([v])
            losses.append(loss)
        finite = [loss for loss in losses if not math.isnan(loss)]
        return min(finite) if finite else math.nan

    def _chosen(self) -> int:
        return min(range(len(self.restarts)), key=lambda r: self.restarts[r][4].loss)

    def frame(self) -> torch.Tensor:
        v, _, _, _, best, _ = self.restarts[self._chosen()]
        return self.box.image(v) if best.inputs is None else best.inputs

    def finish(self, interrupted: bool):
        for v, targets, _, closure, best, scale in self.restarts:
            if not interrupted:
                with torch.enable_grad():
                    best.offer(float(closure()) / scale, self.box.image(v), targets().argmax(-1))
            if best.inputs is None:  # interrupted before any evaluation, or no finite loss at all
                best.inputs, best.labels = self.box.image(v).detach().clone(), targets().detach().argmax(-1)
        chosen = self._chosen()
        best = self.restarts[chosen][4]
        return best.inputs, best.labels, best.loss, {
            "restarts": len(self.restarts), "best_restart": chosen,
            "restart_matching_losses": [r[4].loss for r in self.restarts]}


@register_attack("dlg", config=DLGConfig, model="lenet", normalize=False, train_split=True, labels_known=False)
def dlg(model: nn.Module, update: SharedUpdate, config: DLGConfig | None = None, *, seed: int = 0,
        progress: bool = True, frame_every: int = 0, start_image: torch.Tensor | None = None, **settings) -> Reconstruction:
    """Run DLG for ``config.max_iterations`` outer L-BFGS steps; Ctrl-C returns the best result
    so far. ``settings`` override fields of ``config`` (``dlg(model, update, max_iterations=50)``).
    ``start_image``: an image every restart's dummy starts at, instead of a random draw.
    ``frame_every > 0`` records, every that many steps, the image the attack would return if it
    stopped there: the best so far (the random start before the first step). With several
    ``restarts``, the one with the lowest matching loss is returned (never the ground truth)."""
    config = attack_info("dlg").configure(config, **settings)
    problem = prepare(model, update, config, "dlg", disclosed_labels=False)
    search = DLGSearch(problem, config, torch.Generator(device="cpu").manual_seed(seed), start_image)
    result = Reconstruction(*run_search(search, config, progress, frame_every, "DLG"))
    result.details.update(problem.notes)
    return result
