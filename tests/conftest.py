import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from soteria_lib.data import ENV_VAR

from processes import free_port, reachable, wait_until


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


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """HOST:PORT of a two-CPU Ray head on 127.0.0.1 (the Ray sweep's and the Flower federation's
    tests), stopped with its whole process group at the end of the session."""
    port = free_port()
    temp = Path(f"/tmp/ray-soteria-{os.getpid()}")  # short: Ray's socket paths have a length limit
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    address = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: reachable(port), timeout=120, what="the Ray head")
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        time.sleep(1)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of that session still alive
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)
