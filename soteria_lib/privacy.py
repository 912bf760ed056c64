"""(epsilon, delta) of DP-SGD (:mod:`soteria_lib.defenses.dpsgd`) in our FedAvg, from Opacus's
Renyi-DP accountant (chapter 5).

The mechanism: on every local step a client shares the DP-SGD gradient (3) of its minibatch,
per-example clipping to ``C`` and Gaussian noise of multiplier ``z``. What it protects: each
single training example of a client, against everyone who sees the client's shared updates (the
server included), under zero-out adjacency (the example replaced by one whose gradient is zero:
the clipped sum moves by at most ``C``). With shuffled batches of fixed size the number of steps
is public, so add-or-remove adjacency does not apply; replacing one example by another moves the
sum by up to ``2C``, the guarantee of multiplier ``z / 2``. It says nothing about the client's
data as a whole, and nothing at all about the other noise baselines (:mod:`.defenses.noise`),
which clip nothing per example and so have no finite epsilon.

Accounting, as the mechanism really runs (:func:`shuffled_ledger`): a client's batches are a
shuffled partition of its examples, so in each local epoch every example is in exactly one
batch, whose clipped sum it moves by at most ``C``: one Gaussian mechanism of multiplier ``z``
per epoch, with no amplification by subsampling (the accountant's Poisson assumption does not
hold for shuffled batches, so we do not use it). The ledger charges a client only for the rounds
it took part in (the server's sampling of clients is the run's seed, known to the client), and
the federation reports its worst client. :func:`dp_sgd_epsilon` and :func:`fedavg_budget` give
the Poisson figure for comparison (what much of the literature reports for shuffled batches).
Opacus is an optional extra: ``pip install "soteria-lib[privacy]"``.
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
    accounting: str = "poisson, every round"


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


SHUFFLED = "shuffled batches: one Gaussian mechanism per local epoch, rounds joined"


def shuffled_ledger(noise_multiplier: float, client_examples: list[int], rounds_joined: list[int],
                    local_epochs: int, delta: float = DEFAULT_DELTA) -> ClientBudget:
    """The worst client's (epsilon, delta) when each of its examples is in one shuffled batch per
    local epoch: ``rounds joined x local epochs`` Gaussian mechanisms of multiplier z, composed
    without subsampling."""
    budgets = []
    for examples, joined in zip(client_examples, rounds_joined):
        uses = joined * local_epochs
        budgets.append(ClientBudget(dp_sgd_epsilon(noise_multiplier, 1.0, uses, delta), delta, noise_multiplier,
                                    1.0, uses, examples, SHUFFLED))
    return max(budgets, key=lambda b: (b.epsilon, b.steps))


def fedavg_ledger(defense, client_examples: list[int], rounds_joined: list[int], training,
                  delta: float = DEFAULT_DELTA) -> ClientBudget:
    """The accountant DP-SGD registers (:mod:`soteria_lib.defenses.dpsgd`): :func:`shuffled_ledger`
    of a FedAvg schedule ``training`` at the defense's noise multiplier."""
    return shuffled_ledger(defense.noise_multiplier, client_examples, rounds_joined, training.local_epochs, delta)
