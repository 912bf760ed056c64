"""Where and how a run executes: its seeds, its device, and the record of where it ran.

Every result the library writes (a reconstruction's metrics, a FedAvg run, a sweep row) carries
:func:`where_it_ran`: the device, torch's version, the CPU's vector capability and the thread
count. On one machine a seeded run repeats bit for bit; on another CPU the kernels round
differently, and chaotic optimisations (DLG's L-BFGS, GS's signed Adam) then diverge, which is
why chapter 2 compares runs only within one machine.
"""
from __future__ import annotations

import random

import numpy as np
import torch


# torch's CPU generator keeps the low 32 bits of a seed: seeds 0 and 2**32 give the same stream.
# So a seed is an integer in [0, 2**32 - 1]; anything else is refused, never folded.
MAX_SEED = 2**32 - 1


def check_seed(seed) -> int:
    """``seed`` if it is an integer in [0, 2**32 - 1], else a one-line ``ValueError``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"a seed is an integer in [0, {MAX_SEED}] (torch keeps 32 bits of it), got {seed!r}")
    return seed


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the model's initial weights are drawn from torch's stream)."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def where_it_ran(device: torch.device | str) -> dict:
    """The facts that decide whether another machine can repeat a result bit for bit."""
    return {"device": str(device), "torch_version": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads()}
