"""FedAvg convergence with a masked gradient, on a convex surrogate where every constant is known.
Chapter 7 teaches it; the mask is Soteria's own rule (:func:`soteria_lib.defenses.keep_mask`).

**Setting** (Li, Huang, Yang, Wang, Zhang, ICLR 2020, "On the Convergence of FedAvg on Non-IID
Data", Theorem 1). K clients with weights p_k = n_k / n and objectives F_k that are L-smooth and
mu-strongly convex; F = sum_k p_k F_k. Every client takes E local SGD steps per round with step
size eta_t = 2 / (mu (gamma + t)), gamma = max(8 kappa, E), kappa = L / mu, full participation.
With sigma_k^2 bounding the minibatch gradient variance on client k, G^2 the squared norm of
the stochastic gradients, and Gamma = F* - sum_k p_k F_k* (heterogeneity),

    E F(w_T) - F*  <=  kappa / (gamma + T - 1) * ( 2 B / mu + mu gamma / 2 * ||w_1 - w*||^2 ),
    B = sum_k p_k^2 sigma_k^2 + 6 L Gamma + 8 (E - 1)^2 G^2.                              (7.2)

**Our extension to Soteria (not a quotation of the paper).** Soteria replaces the client's
gradient g by g - delta, where delta holds the pruned columns of the FC weight gradient. Masking
only removes entries, so ||g - delta|| <= ||g|| <= G and Li et al.'s variance and divergence
lemmas still hold; the bias enters through Young's inequality with constant eta_t mu / 2:

    D_{t+1} <= (1 - eta_t mu / 2) D_t + (1 + eta_t mu / 2) eta_t^2 B
               + (1 + 2 / (eta_t mu)) eta_t^2 eps_t^2,     F(w_t) - F* <= L / 2 * D_t,         (7.3)

with D_t = E ||w_t - w*||^2 and eps_t^2 = E ||sum_k p_k delta_t^k||^2, measured along the run.
Without the defense (eps = 0) the tighter recursion D_{t+1} <= (1 - eta_t mu) D_t + eta_t^2 B of
Li et al. applies, and (7.2) is its closed form.

**Surrogate.** Multinomial logistic regression on fixed features phi (with a constant bias
feature), f_i(W) = CE(W phi_i, y_i) + (lambda / 2) ||W||_F^2. Then mu = lambda;
L_k = lambda_max(Phi_k^T Phi_k / n_k) / 2 + lambda, since the softmax Hessian is at most I / 2;
sigma_k^2 = 2 mean_i ||phi_i||^2 / b for batches of b drawn with replacement, since
||p - e_y||^2 <= 2; G = sqrt(2) max_i ||phi_i|| + lambda max_t ||W_t||; F* and F_k* by L-BFGS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .defenses.registry import check_rate
from .defenses.soteria import feature_jacobian_norms, feature_scores, keep_mask
from .introspection import select_linear


@dataclass
class Surrogate:
    """Features (n, d) in float64, the last column constant 1 (the bias); one index tensor per client.

    ``scores`` (n, d - 1), optional: each sample's Soteria score per feature, so the mask of a
    batch is the percentile rule applied to the batch sum (the bias column is never pruned).
    """

    features: torch.Tensor
    labels: torch.Tensor
    parts: list[torch.Tensor]
    num_classes: int
    l2: float
    scores: torch.Tensor | None = None

    @property
    def weights(self) -> torch.Tensor:
        sizes = torch.tensor([len(p) for p in self.parts], dtype=torch.float64)
        return sizes / sizes.sum()

    def loss(self, w: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        phi = self.features if index is None else self.features[index]
        y = self.labels if index is None else self.labels[index]
        return F.cross_entropy(phi @ w.T, y) + 0.5 * self.l2 * (w ** 2).sum()

    def gradient(self, w: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        phi, y = self.features[index], self.labels[index]
        residual = torch.softmax(phi @ w.T, dim=1) - F.one_hot(y, self.num_classes).double()
        return residual.T @ phi / len(index) + self.l2 * w

    def minimise(self, index: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """The minimiser and minimum of F (or of one client's F_k) by L-BFGS, to ~1e-12."""
        w = torch.zeros(self.num_classes, self.features.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w], lr=1, max_iter=2000, tolerance_grad=1e-12,
                                      tolerance_change=1e-15, history_size=50, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            value = self.loss(w, index)
            value.backward()
            return value

        optimizer.step(closure)
        with torch.no_grad():
            return w.detach(), float(self.loss(w, index))

    def batch_mask(self, index: torch.Tensor, rate: float) -> torch.Tensor:
        """Soteria's keep-mask over the d columns for one batch (bias column always kept)."""
        keep = keep_mask(self.scores[index].sum(0), rate)
        return torch.cat([keep, torch.ones(1, dtype=torch.bool)])


@dataclass
class Constants:
    L: float
    mu: float
    sigma2: list[float]
    Gamma: float
    F_star: float
    w_star: torch.Tensor
    local_steps: int

    @property
    def kappa(self) -> float:
        return self.L / self.mu

    @property
    def gamma(self) -> float:
        return max(8 * self.kappa, self.local_steps)

    def step_size(self, t: int) -> float:
        return 2.0 / (self.mu * (self.gamma + t))


def constants(problem: Surrogate, batch_size: int, local_steps: int) -> Constants:
    """Every constant of (7.2) that does not depend on the trajectory."""
    smooth, sigma2, client_minima = [], [], []
    for index in problem.parts:
        phi = problem.features[index]
        smooth.append(float(torch.linalg.eigvalsh(phi.T @ phi / len(index))[-1]) / 2 + problem.l2)
        sigma2.append(2 * float((phi ** 2).sum(1).mean()) / batch_size)
        client_minima.append(problem.minimise(index)[1])
    w_star, f_star = problem.minimise()
    gamma_het = f_star - float((problem.weights * torch.tensor(client_minima)).sum())
    return Constants(max(smooth), problem.l2, sigma2, max(gamma_het, 0.0), f_star, w_star, local_steps)


def run_surrogate_fedavg(problem: Surrogate, c: Constants, rounds: int, batch_size: int,
                         pruning_rate: float | None = None, seed: int = 0) -> dict:
    """FedAvg with the theorem's step sizes and full participation; optionally Soteria's mask.

    Returns the optimality gap F(w_r) - F* after each round r = 0..rounds, the measured
    eps_t^2 of every local step, and the largest iterate norm (for G)."""
    if pruning_rate is not None:
        check_rate(pruning_rate)
        if problem.scores is None:
            raise ValueError("the surrogate has no Soteria scores")
    generator = torch.Generator().manual_seed(seed)
    w = torch.zeros(problem.num_classes, problem.features.shape[1], dtype=torch.float64)
    p = problem.weights
    gaps = [float(problem.loss(w)) - c.F_star]
    eps2, w_max, t = [], float(w.norm()), 1
    for _ in range(rounds):
        local = [w.clone() for _ in problem.parts]
        for _ in range(c.local_steps):
            eta = c.step_size(t)
            bias = torch.zeros_like(w)
            for k, index in enumerate(problem.parts):
                batch = index[torch.randint(len(index), (batch_size,), generator=generator)]
                g = problem.gradient(local[k], batch)
                if pruning_rate is not None:
                    keep = problem.batch_mask(batch, pruning_rate)
                    bias += p[k] * g * (~keep)
                    g = g * keep
                local[k] -= eta * g
                w_max = max(w_max, float(local[k].norm()))
            eps2.append(float((bias ** 2).sum()))
            t += 1
        w = sum(pk * wk for pk, wk in zip(p, local))
        gaps.append(float(problem.loss(w)) - c.F_star)
    return {"gaps": gaps, "eps2": eps2, "w_max": w_max}


def variance_term(problem: Surrogate, c: Constants, w_max: float) -> float:
    """B of (7.2), with G = sqrt(2) max_i ||phi_i|| + lambda max_t ||W_t||."""
    g = math.sqrt(2) * float(problem.features.norm(dim=1).max()) + problem.l2 * w_max
    p = problem.weights.numpy()
    return (float(np.sum(p ** 2 * np.array(c.sigma2))) + 6 * c.L * c.Gamma
            + 8 * (c.local_steps - 1) ** 2 * g ** 2)


def li_bound(c: Constants, B: float, rounds: int) -> list[float]:
    """(7.2) after each round r (T = r E steps; r = 0 gives the initial-distance term)."""
    d1 = float((c.w_star ** 2).sum())  # w_1 = 0
    return [c.kappa / (c.gamma + max(r * c.local_steps, 1) - 1) * (2 * B / c.mu + c.mu * c.gamma / 2 * d1)
            for r in range(rounds + 1)]


def masked_bound(c: Constants, B: float, eps2: list[float]) -> list[float]:
    """(7.3) iterated over the measured eps_t^2, reported after each round."""
    d = float((c.w_star ** 2).sum())
    out = [c.L / 2 * d]
    for t, e2 in enumerate(eps2, start=1):
        eta = c.step_size(t)
        d = ((1 - eta * c.mu / 2) * d + (1 + eta * c.mu / 2) * eta ** 2 * B
             + (1 + 2 / (eta * c.mu)) * eta ** 2 * e2)
        if t % c.local_steps == 0:
            out.append(c.L / 2 * d)
    return out


def surrogate_from_model(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         parts: list[torch.Tensor], l2: float) -> Surrogate:
    """Freeze everything before ``model``'s last linear layer and standardise its output:
    phi_j = (r_j - m_j) / (s_j sqrt(l)), with the data's mean m and standard deviation s. The
    frozen extractor is x -> phi, so Soteria's score of feature j for sample i is
    ||d phi_j / dx|| / |phi_j| = ||d r_j / dx|| / |r_j - m_j| (0 where both vanish)."""
    _, linear = select_linear(model)
    r, norms = feature_jacobian_norms(model, images, linear)
    r, norms = r.double(), norms.double()
    centred = r - r.mean(0)
    scale = r.std(0).clamp_min(1e-12) * math.sqrt(r.shape[1])
    features = torch.cat([centred / scale, torch.ones(len(r), 1, dtype=torch.float64)], dim=1)
    return Surrogate(features, labels.long(), parts, linear.out_features, l2, feature_scores(centred, norms, 0.0))
