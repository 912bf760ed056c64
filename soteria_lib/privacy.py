"""(epsilon, delta) of DP-SGD (:mod:`soteria_lib.defenses.dpsgd`) in our FedAvg, from Opacus's
Renyi-DP accountant (chapter 5).

The mechanism: on every local step a client shares the DP-SGD gradient (3) of its minibatch,
per-example clipping to ``C`` and Gaussian noise of multiplier ``z``. What it protects: each
single training example of a client, against everyone who sees the client's shared updates (the
server included), under add-or-remove-one-example adjacency. It says nothing about the client's
data as a whole, and nothing at all about the other noise baselines (:mod:`.defenses.noise`),
which clip nothing per example and so have no finite epsilon.

Accounting: a client with n examples takes E * ceil(n / B) steps per round it joins, each on a
batch that holds a given example with rate q = B / n. The server chooses who joins, so the
sampling of clients amplifies nothing: we charge every client for every round (the worst case).
Our batches are a shuffled partition of the client's data, not the Poisson sampling the
accountant assumes; reporting the Poisson figure for shuffled batches is common practice and is
stated wherever a number is printed. Opacus is an optional extra: ``pip install
"soteria-lib[privacy]"``.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

DEFAULT_DELTA = 1e-5
PRIVACY_MISSING = "privacy accounting needs Opacus: pip install 'soteria-lib[privacy]'"


class OpacusMissing(RuntimeError):
    """Privacy accounting was asked for where Opacus is not installed."""


def _accountant():
    try:
        return importlib.import_module("opacus.accountants").RDPAccountant()
    except ImportError:
        raise OpacusMissing(PRIVACY_MISSING) from None


def dp_sgd_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float = DEFAULT_DELTA) -> float:
    """Epsilon after ``steps`` subsampled Gaussian steps (infinite without noise, 0 without steps)."""
    if not (0 < sample_rate <= 1) or steps < 0 or not (0 < delta < 1) or noise_multiplier < 0:
        raise ValueError(f"need 0 < sample_rate <= 1, steps >= 0, 0 < delta < 1 and noise_multiplier >= 0; got "
                         f"{sample_rate}, {steps}, {delta}, {noise_multiplier}")
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = _accountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(accountant.get_epsilon(delta))


@dataclass(frozen=True)
class ClientBudget:
    """A FedAvg client's privacy loss: the worst client of the federation, as charged above."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    examples: int  # of that client


def fedavg_budget(client_examples: list[int], rounds: int, local_epochs: int, batch_size: int,
                  noise_multiplier: float, delta: float = DEFAULT_DELTA) -> ClientBudget:
    """The largest epsilon over the clients, each charged for every round."""
    budgets = []
    for examples in client_examples:
        if examples < 1:
            raise ValueError("every client needs at least one example")
        rate = min(1.0, batch_size / examples)
        steps = rounds * local_epochs * math.ceil(examples / batch_size)
        budgets.append(ClientBudget(dp_sgd_epsilon(noise_multiplier, rate, steps, delta), delta, noise_multiplier,
                                    rate, steps, examples))
    return max(budgets, key=lambda b: (b.epsilon, b.steps))
