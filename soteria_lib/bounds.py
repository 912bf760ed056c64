"""Certified reconstruction distance: our formalisation of Soteria's robustness guarantee (chapter 7).

**Statement (ours, not a quotation of the paper).** Let ``f: R^d -> R^l`` map an input X to the
representation r entering the defended layer, and let f be L-Lipschitz in the Euclidean norm.
If the defense replaces r by r' (pruned features set to 0), then every input X' whose
representation equals the defended one, f(X') = r', satisfies

    ||X' - X||_2  >=  ||r' - r||_2 / L,     ||r' - r||_2 = (sum_{i pruned} r_i^2)^{1/2},     (7.1)

because ||r' - r|| = ||f(X') - f(X)|| <= L ||X' - X||. Dividing the square by d gives a lower
bound on the reconstruction MSE in the input space of f.

L is computed two ways:

* **certified, global**: the product over the layers of f of their Lipschitz constants,
  with operator norms of linear and convolutional maps by power iteration (the composition
  rule ``Lip(g o h) <= Lip(g) Lip(h)``; valid for feed-forward chains);
* **local estimate**: the largest singular value of the Jacobian dr/dX at X, by power
  iteration with Jacobian-vector products. It is not a certificate (f is not linear), but
  it is the constant a first-order attacker near X actually faces, and is never larger
  than the global bound.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.func import jvp, vjp

from .defenses import get_defense
from .introspection import eval_mode, representation_fn, select_linear


@torch.no_grad()
def _power_iteration(forward, adjoint, shape, iterations: int, generator: torch.Generator,
                     tolerance: float = 1e-9) -> float:
    """Largest singular value of a linear map given as ``forward`` and its ``adjoint``:
    v <- A^T A v / ||A^T A v||, sigma = ||A v||, until sigma changes by less than ``tolerance``."""
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(iterations):
        u = forward(v)
        previous, sigma = sigma, float(u.norm())
        if sigma == 0.0 or abs(sigma - previous) <= tolerance * sigma:
            return sigma
        v = adjoint(u / sigma)
        v = v / v.norm()
    return sigma


def operator_norm(layer: nn.Module, input_shape: tuple[int, ...], iterations: int = 1000,
                  seed: int = 0) -> float:
    """Spectral norm of the linear part of a Linear or Conv layer on inputs of ``input_shape``
    (one sample, no batch dimension); the bias does not change a Lipschitz constant."""
    weight = layer.weight.detach().double()
    if isinstance(layer, nn.Linear):
        apply = lambda x: x @ weight.T  # noqa: E731
    elif isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError("operator_norm supports zero padding only")
        apply = lambda x: nn.functional.conv2d(  # noqa: E731
            x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        raise TypeError(f"no operator norm for {type(layer).__name__}")
    x0 = torch.zeros((1, *input_shape), dtype=torch.float64)
    _, adjoint_fn = vjp(apply, x0)
    generator = torch.Generator().manual_seed(seed)
    return _power_iteration(apply, lambda u: adjoint_fn(u)[0], x0.shape, iterations, generator)


def _pool_lipschitz(layer: nn.MaxPool2d) -> float:
    """Each input lies in at most ceil(k/s)^2 windows, so max-pooling is ceil(k/s)-Lipschitz
    (1 for non-overlapping windows)."""
    k = layer.kernel_size if isinstance(layer.kernel_size, tuple) else (layer.kernel_size,) * 2
    s = layer.stride if isinstance(layer.stride, tuple) else (layer.stride,) * 2
    return math.sqrt(math.ceil(k[0] / s[0]) * math.ceil(k[1] / s[1]))


def _batchnorm_lipschitz(layer: nn.modules.batchnorm._BatchNorm) -> float:
    """In eval mode BatchNorm is x -> gamma (x - mean) / sqrt(var + eps) + beta, per channel."""
    scale = torch.rsqrt(layer.running_var + layer.eps)
    if layer.weight is not None:
        scale = scale * layer.weight
    return float(scale.detach().abs().max())


# Lipschitz constant of each elementwise or structural layer (input shape unused).
ELEMENTWISE = {
    nn.Sigmoid: lambda layer: 0.25,
    nn.ReLU: lambda layer: 1.0,
    nn.LeakyReLU: lambda layer: max(1.0, abs(layer.negative_slope)),
    nn.Tanh: lambda layer: 1.0,
    nn.Flatten: lambda layer: 1.0,
    nn.Identity: lambda layer: 1.0,
    nn.Dropout: lambda layer: 1.0,
    nn.MaxPool2d: _pool_lipschitz,
    nn.BatchNorm2d: _batchnorm_lipschitz,
    nn.BatchNorm1d: _batchnorm_lipschitz,
}


def feature_layers(model: nn.Module, input_shape: tuple[int, int, int], layer: str | None = None):
    """The leaf modules run before the defended linear layer, in call order, with the input
    shape each one received (found by running the model once on zeros)."""
    _, linear = select_linear(model, layer)
    calls, handles = [], []
    for module in model.modules():
        if module is not linear and not list(module.children()):
            handles.append(module.register_forward_pre_hook(
                lambda m, args: calls.append((m, tuple(args[0].shape[1:])))))
    try:
        with torch.no_grad():
            representation_fn(model, linear)(torch.zeros((1, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return calls


def layer_lipschitz(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        return operator_norm(module, input_shape)
    for kind, rule in ELEMENTWISE.items():
        if isinstance(module, kind):
            return rule(module)
    raise TypeError(f"no Lipschitz rule for {type(module).__name__}; add one to bounds.ELEMENTWISE")


def global_lipschitz(model: nn.Module, input_shape: tuple[int, int, int], layer: str | None = None) -> float:
    """Certified upper bound on Lip(f): the product of the per-layer constants (eval mode)."""
    with eval_mode(model):
        return math.prod(layer_lipschitz(m, shape) for m, shape in feature_layers(model, input_shape, layer))


def local_lipschitz(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                    iterations: int = 300, seed: int = 0) -> float:
    """Largest singular value of the Jacobian dr/dX at one input ``x`` of shape (C, H, W)."""
    _, linear = select_linear(model, layer)
    run = representation_fn(model, linear)
    f = lambda v: run(v.unsqueeze(0))[0]  # noqa: E731
    with eval_mode(model):
        x = x.detach()
        _, pullback = vjp(f, x)
        forward = lambda v: jvp(f, (x,), (v.to(x.dtype),))[1].double()  # noqa: E731
        adjoint = lambda u: pullback(u.to(x.dtype))[0].double()  # noqa: E731
        generator = torch.Generator().manual_seed(seed)
        with warnings.catch_warnings():
            # torch.func.jvp's first call scripts a helper with the deprecated torch.jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
            return _power_iteration(forward, adjoint, x.shape, iterations, generator)


def representation_distance(r: torch.Tensor, keep: torch.Tensor) -> float:
    """||r' - r||_2 for r' = r with the features outside ``keep`` set to zero (one sample)."""
    return float(r.flatten()[~keep.flatten()].double().norm())


def reconstruction_bound(r: torch.Tensor, keep: torch.Tensor, lipschitz: float, dimension: int) -> dict:
    """Equation (7.1): the distance and MSE lower bounds for any X' with f(X') = r'."""
    distance = representation_distance(r, keep) / lipschitz
    return {"distance": distance, "mse": distance ** 2 / dimension}


def bound_curve(model: nn.Module, x: torch.Tensor, rates, epsilon: float | None = None) -> list[dict]:
    """(7.1) at each pruning rate for one input ``x`` (C, H, W), with both Lipschitz constants."""
    _, linear = select_linear(model)
    r = representation_fn(model, linear)(x.unsqueeze(0)).detach()[0]
    certified = global_lipschitz(model, tuple(x.shape))
    local = local_lipschitz(model, x)
    rows = []
    for rate in rates:
        keep = get_defense("soteria", pruning_rate=rate, epsilon=epsilon).mask(model, x.unsqueeze(0))
        rows.append({
            "pruning_rate": rate, "pruned": int((~keep).sum()),
            "representation_distance": representation_distance(r, keep),
            "mse_bound_certified": reconstruction_bound(r, keep, certified, x.numel())["mse"],
            "mse_bound_local": reconstruction_bound(r, keep, local, x.numel())["mse"],
        })
    return rows
