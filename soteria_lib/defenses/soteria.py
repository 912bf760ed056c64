"""Soteria (Sun et al., CVPR 2021): prune the data representation that leaks most. Chapter 4.

Let ``r = f(x)`` be the input of the defended linear layer ``z = W r + b`` (by default the
model's last ``nn.Linear``, or the one named by its module path). For every feature ``i`` and
sample ``n`` of the private batch

    s_{n,i} = || d r_{n,i} / d x_n ||_2 / (|r_{n,i}| + epsilon),      S_i = sum_n s_{n,i},   (1)

the reciprocal of the first-order input distance ``|r_i| / ||dr_i/dx||`` needed to erase
feature ``i``. With ``tau = percentile(S, p)`` (NumPy's linear rule, ``p`` in percent), feature
``i`` is pruned when ``|S_i| < tau``: strict, so ties at the threshold are kept. The shared
gradient is the ordinary one with the pruned *columns* of ``dL/dW`` set to zero; the bias and
every other layer's gradient are untouched. One mask per batch, as in the published code.

Defaults reproduce the published code: ``epsilon = 0`` for sigmoid models (the DLG notebook)
and ``epsilon = 0.1`` for models with ReLU (the GS script); ``epsilon=None`` picks by model.
A feature that is exactly zero with a zero Jacobian row (dead ReLU, max-pool) scores 0 instead
of ``0/0``; any other non-finite score raises. ``|r_i|`` in the denominator is our documented
deviation for activations that can be negative (the authors use ``r_i``).

The norms in (1) are exact: one vector-Jacobian product (VJP) per feature and sample, as in the
published loop, computed either one at a time or many at once (``torch.func.vmap``) in chunks
sized to memory, and skipped for features that are exactly zero once one random VJP has
certified that all their Jacobian rows vanish. See :func:`feature_jacobian_norms`.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import vjp, vmap

from ..introspection import eval_mode, parameter_index, representation_fn, select_linear
from ..quantiles import percentile
from .basic import RATE
from .registry import COMPUTATION, Defense, check_non_negative, check_rate, register_defense

# Batched VJPs hold one input-sized gradient, plus every activation, per feature of a chunk.
# On a GPU they win whenever they fit (budget: a quarter of the free memory). On this project's
# 2-core CPU (bench/soteria_scores.py) they beat the published loop 6.5x for LeNet at batch 1
# but only 1.5x at batch 8, where the loop's backward passes are batched too and both run the
# same convolution kernels; they tie with the loop once fewer than about 16 features fit in a
# 64 MiB chunk (the GS ConvNet from width 32 on); there the loop, which needs no chunk memory,
# is used.
CPU_CHUNK_BYTES = 64 * 2**20
CPU_MIN_CHUNK = 16
METHODS = ("auto", "loop", "batched")
_PROBE_SEED = 20201209  # fixed: the zero-feature certificate is deterministic


def default_epsilon(model: nn.Module) -> float:
    """0.1 for models with ReLU (the published GS rule), 0 otherwise (the DLG rule)."""
    return 0.1 if any(isinstance(m, nn.ReLU) for m in model.modules()) else 0.0


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    return method


def plan_chunk(model: nn.Module, run, x: torch.Tensor, method: str = "auto") -> int:
    """Features per batched VJP call, or 0 for the one-at-a-time loop, for samples like ``x``.

    A batched chunk holds, per feature, at most the bytes of the input and of every leaf
    module's output in one forward pass. ``auto``: on a GPU, batched in chunks filling a quarter
    of the free memory; on a CPU, batched in ``CPU_CHUNK_BYTES`` chunks when at least
    ``CPU_MIN_CHUNK`` features fit, else the loop.
    """
    if _check_method(method) == "loop":
        return 0
    sizes = [x.nbytes]

    def record(module, args, out):
        if isinstance(out, torch.Tensor):
            sizes.append(out.nbytes)

    handles = [m.register_forward_hook(record) for m in model.modules() if not any(m.children())]
    try:
        with torch.no_grad():
            features = run(x).shape[1]
    finally:
        for handle in handles:
            handle.remove()
    if x.is_cuda:
        budget, minimum = torch.cuda.mem_get_info(x.device)[0] // 4, 1
    else:
        budget, minimum = CPU_CHUNK_BYTES, CPU_MIN_CHUNK
    chunk = min(features, max(1, budget // sum(sizes)))
    return chunk if method == "batched" or chunk >= minimum else 0


def _pullback(run, x: torch.Tensor, chunk: int):
    """``(r, pull)`` for one sample ``x`` of shape (1, ...): ``r`` of shape (l,) and
    ``pull(V) = V @ dr/dx`` for cotangents ``V`` of shape (k, l), flattened to (k, C*H*W)."""
    if chunk:  # no_grad keeps autograd from recording the VJPs w.r.t. the parameters (torch.func ignores it)
        with torch.no_grad():
            r, vjp_fn = vjp(lambda v: run(v)[0], x)

        def pull(v):
            with torch.no_grad():
                return vmap(vjp_fn)(v)[0].flatten(1)

        return r, pull
    x = x.detach().requires_grad_(True)
    r = run(x)[0]
    return r.detach(), lambda v: torch.stack([
        torch.autograd.grad(r, x, row, retain_graph=True)[0].flatten() for row in v])


def _sample_norms(run, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r, ||dr_i/dx||)`` for one sample, skipping certified-zero rows of the Jacobian."""
    r, pull = _pullback(run, x, chunk)
    active = r != 0
    if not active.all():
        # One VJP with random weights on the zero features is exactly zero iff (with
        # probability 1) all their Jacobian rows are: true under ReLU and max-pool.
        generator = torch.Generator().manual_seed(_PROBE_SEED)
        weights = torch.randn(r.shape, generator=generator, dtype=r.dtype).to(r.device)
        if torch.any(pull((weights * ~active).unsqueeze(0)) != 0):
            active[:] = True
    norms = torch.zeros_like(r)
    index = active.nonzero().flatten()
    step = chunk or 64  # the loop takes its one-hot rows 64 at a time
    for start in range(0, len(index), step):
        rows = index[start:start + step]
        cotangents = torch.zeros(len(rows), r.numel(), dtype=r.dtype, device=r.device)
        cotangents[torch.arange(len(rows)), rows] = 1
        norms[rows] = pull(cotangents).norm(dim=1)
    return r, norms


def feature_jacobian_norms(model: nn.Module, inputs: torch.Tensor, linear: nn.Linear,
                           method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(r, ||dr/dx||)``, both shaped (B, l): the representation and, per sample, the norm of
    each feature's input gradient (one Jacobian row per feature), in eval mode.

    ``method``: ``loop`` (one VJP at a time), ``batched`` (``vmap`` over chunks of one-hot
    cotangents) or ``auto`` (:func:`plan_chunk`). All three give the published loop's norms, up
    to float rounding. Each sample has its own Jacobian; samples need not be independent.
    """
    key = _digest(model, linear, inputs, method) if _RECENT_SIZE else None
    if key in _RECENT:
        _RECENT.move_to_end(key)
        return tuple(t.clone() for t in _RECENT[key])
    run = representation_fn(model, linear)
    with eval_mode(model):
        chunk = plan_chunk(model, run, inputs[:1].detach(), method)
        pairs = [_sample_norms(run, inputs[b:b + 1].detach(), chunk) for b in range(len(inputs))]
    result = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    if key is not None:
        _RECENT[key] = tuple(t.clone() for t in result)
        while len(_RECENT) > _RECENT_SIZE:
            _RECENT.popitem(last=False)
    return result


# Off by default. A sweep runs every rate and attacker on one model and image one after another;
# with keep_recent_norms(k) the last k results are kept, keyed by the exact bytes of model, layer,
# inputs and method, and reused (timing code would otherwise measure the reuse).
_RECENT_SIZE = 0
_RECENT: OrderedDict = OrderedDict()


def keep_recent_norms(size: int) -> int:
    """Keep the Jacobian norms of the last ``size`` (model, inputs) pairs for reuse (0: none);
    returns the previous size."""
    global _RECENT_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be an integer >= 0, got {size!r}")
    previous, _RECENT_SIZE = _RECENT_SIZE, size
    _RECENT.clear()
    return previous


@contextmanager
def recent_norms(size: int):
    """:func:`keep_recent_norms` for the duration of a ``with`` block."""
    previous = keep_recent_norms(size)
    try:
        yield
    finally:
        keep_recent_norms(previous)


def _digest(model: nn.Module, linear: nn.Linear, inputs: torch.Tensor, method: str) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    layer = next(name for name, m in model.named_modules() if m is linear)
    h.update(f"{model!r}|{layer}|{method}".encode())  # the architecture, activations included
    for name, tensor in [*model.state_dict().items(), ("inputs", inputs)]:
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def soteria_scores(model: nn.Module, inputs: torch.Tensor, layer: str | None = None,
                   epsilon: float | None = None, method: str = "auto") -> torch.Tensor:
    """``S_i = sum_n ||dr_{n,i}/dx_n|| / (|r_{n,i}| + epsilon)``, equation (1), shape (l,)."""
    _, linear = select_linear(model, layer)
    eps = default_epsilon(model) if epsilon is None else float(epsilon)
    r, norms = feature_jacobian_norms(model, inputs, linear, method)
    per_sample = feature_scores(r, norms, eps)
    if not torch.isfinite(per_sample).all():
        raise FloatingPointError("non-finite Soteria score: a feature with r_i = 0 has a non-zero "
                                 "input gradient; use epsilon > 0")
    return per_sample.sum(0)


def feature_scores(r: torch.Tensor, norms: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Each sample's term ``s_{n,i} = ||dr_{n,i}/dx_n|| / (|r_{n,i}| + epsilon)`` of equation (1),
    from the representation ``r`` and its Jacobian row norms ``norms`` (same shape): 0 where both
    vanish (a dead feature), ``inf`` where only ``r`` does and ``epsilon`` is 0."""
    zero = (r == 0) & (norms == 0)
    return torch.where(zero, torch.zeros_like(norms), norms / torch.where(zero, 1.0, r.abs() + epsilon))


def keep_mask(scores: torch.Tensor, pruning_rate: float) -> torch.Tensor:
    """Boolean keep-mask ``|S_i| >= percentile(S, p)``: ties at the threshold are kept."""
    return scores.abs() >= percentile(scores, check_rate(pruning_rate)).to(scores.dtype)


def mask_statistics(scores: torch.Tensor, pruning_rate: float) -> dict:
    """What a mask does: features pruned, how many of them already scored 0 (a zero feature's
    column of dL/dW is zero anyway), and the share of scores tied at 0."""
    keep = keep_mask(scores, pruning_rate)
    zero = scores == 0
    return {"features": scores.numel(), "pruned": int((~keep).sum()),
            "pruned_already_zero": int((~keep & zero).sum()), "zero_scores": float(zero.float().mean()),
            "threshold": float(percentile(scores, pruning_rate))}


@register_defense("soteria", title="Soteria", order=1, style=("tab:red", "o"), acts_on=("update",),
                  strength=RATE, flags={"pruning_rate": "pruning_rate", "epsilon": "epsilon"}, aliases=("ours",),
                  leaves_zeros=True, one_layer=True)
@dataclass
class Soteria(Defense):
    """Soteria's defense: zero the defended layer's weight-gradient columns of the
    lowest-scoring features (equation 1). ``layer`` names an ``nn.Linear`` by module path
    (default: the last one); ``epsilon=None`` is 0 for sigmoid models, 0.1 with ReLU. ``method``
    chooses how the Jacobian norms are computed (the same norms either way)."""

    pruning_rate: float = 0.0
    epsilon: float | None = None
    layer: str | None = None
    method: str = field(default="auto", metadata=COMPUTATION)

    def __post_init__(self):
        self.pruning_rate = check_rate(self.pruning_rate)
        if self.epsilon is not None:
            self.epsilon = check_non_negative("epsilon", self.epsilon)
        _check_method(self.method)

    def mask(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Boolean keep-mask over the features of r."""
        return keep_mask(soteria_scores(model, inputs, self.layer, self.epsilon, self.method), self.pruning_rate)

    def on_update(self, model, inputs, labels, gradients):
        _, linear = select_linear(model, self.layer)
        index = parameter_index(model, linear.weight)
        out = [g.clone() for g in gradients]
        if self.pruning_rate > 0:  # at 0, tau = min S and every feature is kept
            keep = self.mask(model, inputs)
            out[index] = out[index] * keep.to(out[index].dtype).unsqueeze(0)
        return tuple(out)

    def defended_parameters(self, model: nn.Module) -> tuple[str, ...]:
        """The weight of the defended layer: the only gradient Soteria changes."""
        name, _ = select_linear(model, self.layer)
        return (f"{name}.weight",)
