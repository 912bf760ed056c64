"""How the server combines a round's client models: FedAvg's weighted average (chapter 6),

    w_{t+1} = sum_k n_k w_k / sum_k n_k,

over the floating-point entries of the clients' state dicts; integer buffers are taken from the
first client. A defense that acts on what the server receives (secure aggregation, say) replaces
it through its ``on_aggregate`` hook (:mod:`soteria_lib.defenses.registry`).
"""
from __future__ import annotations


def average_states(states: list[dict], weights: list[float]) -> dict:
    """Weighted average of floating-point entries; integer buffers are taken from the first."""
    total = float(sum(weights))
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(s[key] * (w / total) for s, w in zip(states, weights))
        else:
            out[key] = first.clone()
    return out
