import os
from pathlib import Path

import pytest
import torch

from soteria_lib.data import ENV_VAR


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The dataset folder from SOTERIA_DATA; tests that need it are skipped locally without it,
    but fail in CI, where it must be set."""
    root = os.environ.get(ENV_VAR)
    if root and (Path(root) / "MNIST").is_dir() and (Path(root) / "cifar-10-batches-py").is_dir():
        return Path(root)
    if os.environ.get("CI"):
        pytest.fail(f"{ENV_VAR} must point at MNIST and CIFAR-10 in CI (got {root!r})")
    pytest.skip(f"{ENV_VAR} is not set to a folder holding MNIST and CIFAR-10")


@pytest.fixture(autouse=True)
def _torch_threads():
    """Two threads (CI's cores), or $OMP_NUM_THREADS where it is set: on a shared machine one
    thread per process avoids the oversubscription that slows small models a hundredfold."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))
