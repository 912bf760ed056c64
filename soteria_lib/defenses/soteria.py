"""Soteria (Sun et al., CVPR 2021): prune the data representation that leaks most.

Let ``r = f(x)`` be the input of the defended linear layer ``z = W r + b`` (by default the
model's last ``nn.Linear``). For every feature ``i`` and sample ``b`` of the private batch

    s_{b,i} = || d r_{b,i} / d x_b ||_2 / (|r_{b,i}| + epsilon),      S_i = sum_b s_{b,i},

the reciprocal of the first-order input distance ``|r_i| / ||dr_i/dx||`` needed to erase
feature ``i``. With ``tau = percentile(S, p)`` (NumPy's linear rule, ``p`` in percent), feature
``i`` is pruned when ``|S_i| < tau``: strict, so ties at the threshold are kept. The shared
gradient is the ordinary one with the pruned *columns* of ``dL/dW`` set to zero; the bias and
every other layer's gradient are untouched.

Defaults reproduce the published code: ``epsilon = 0`` for sigmoid models (the DLG notebook)
and ``epsilon = 0.1`` for models with ReLU (the GS script); ``epsilon=None`` picks by model.
A feature that is exactly zero has a zero Jacobian row (dead ReLU, max-pool) and scores 0
instead of ``0/0``; any other non-finite score raises. ``|r_i|`` in the denominator is our
documented deviation for activations that can be negative (the authors use ``r_i``).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import jacrev

from .registry import check_rate, percentile, register_defense


def select_linear(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Linear]:
    """The defended layer: ``layer`` by module path, or the model's last ``nn.Linear``."""
    modules = dict(model.named_modules())
    if layer is None:
        linears = [(name, m) for name, m in modules.items() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("the model has no nn.Linear layer to defend")
        return linears[-1]
    if layer not in modules:
        raise ValueError(f"no layer named {layer!r} in the model")
    if not isinstance(modules[layer], nn.Linear):
        raise ValueError(f"layer {layer!r} is a {type(modules[layer]).__name__}, not nn.Linear")
    return layer, modules[layer]


class _Captured(Exception):
    """Raised by the hook to stop the forward pass once r is known."""


def representation_fn(model: nn.Module, linear: nn.Linear):
    """``x -> r``: the flattened input of ``linear`` when ``model`` runs on ``x``."""

    def run(x: torch.Tensor) -> torch.Tensor:
        captured = []

        def hook(module, args):
            captured.append(args[0])
            raise _Captured

        handle = linear.register_forward_pre_hook(hook)
        try:
            model(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError("the defended layer was not called in the forward pass")
        return captured[0].flatten(1)

    return run


def _eval_mode(model: nn.Module):
    class _Ctx:
        def __enter__(self):
            self.was_training = model.training
            model.eval()

        def __exit__(self, *exc):
            model.train(self.was_training)

    return _Ctx()


def default_epsilon(model: nn.Module) -> float:
    """0.1 for models with ReLU (the published GS rule), 0 otherwise (the DLG rule)."""
    return 0.1 if any(isinstance(m, nn.ReLU) for m in model.modules()) else 0.0


def feature_jacobian_norms(model: nn.Module, inputs: torch.Tensor, linear: nn.Linear,
                           chunk_size: int | None = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r, ||dr/dx||)``, both shaped (B, l): the representation and the per-sample norm of
    each feature's input gradient (one Jacobian row per feature)."""
    run = representation_fn(model, linear)
    with _eval_mode(model):
        r = run(inputs).detach()
        norms = []
        for x in inputs:
            jac = jacrev(lambda v: run(v.unsqueeze(0))[0], chunk_size=chunk_size)(x.detach())
            norms.append(jac.flatten(1).norm(dim=1))
    return r, torch.stack(norms)


def soteria_scores(model: nn.Module, inputs: torch.Tensor, layer: str | None = None,
                   epsilon: float | None = None) -> torch.Tensor:
    """``S_i = sum_b ||dr_{b,i}/dx_b|| / (|r_{b,i}| + epsilon)``, shape (l,)."""
    _, linear = select_linear(model, layer)
    eps = default_epsilon(model) if epsilon is None else float(epsilon)
    r, norms = feature_jacobian_norms(model, inputs, linear)
    denominator = r.abs() + eps
    zero = (r == 0) & (norms == 0)
    per_sample = torch.where(zero, torch.zeros_like(norms), norms / torch.where(zero, 1.0, denominator))
    if not torch.isfinite(per_sample).all():
        raise FloatingPointError("non-finite Soteria score: a feature with r_i = 0 has a non-zero "
                                 "input gradient; use epsilon > 0")
    return per_sample.sum(0)


@register_defense("soteria")
class Soteria:
    """Soteria's defense: zero the FC weight-gradient columns of the lowest-scoring features."""

    def __init__(self, pruning_rate: float = 0.0, epsilon: float | None = None, layer: str | None = None):
        self.pruning_rate = check_rate(pruning_rate)
        if epsilon is not None and epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = epsilon
        self.layer = layer

    def mask(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Boolean keep-mask over the features of r: ``|S_i| >= percentile(S, p)``."""
        scores = soteria_scores(model, inputs, self.layer, self.epsilon)
        return scores.abs() >= percentile(scores, self.pruning_rate).to(scores.dtype)

    def __call__(self, model, inputs, labels, gradients):
        _, linear = select_linear(model, self.layer)
        keep = self.mask(model, inputs)
        index = [p is linear.weight for p in model.parameters()].index(True)
        out = [g.clone() for g in gradients]
        out[index] = out[index] * keep.to(out[index].dtype).unsqueeze(0)
        return tuple(out)
