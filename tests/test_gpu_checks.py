"""The GPU check script, run on a CPU with its tiny --smoke budget: every section runs and reports."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_checks_run_in_smoke_mode(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECKS_OUTPUT": str(tmp_path / "original"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "bench/gpu_checks.sh", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for section in ("== 1. Soteria scores", "== 2. GS restarts", "== 3. The original command"):
        assert section in out
    assert out.count("-- ") >= 3 and "speed-up" in out and "ratio" in out
    metrics = json.loads((tmp_path / "original" / "metrics.json").read_text())
    assert metrics["defense"] == "ours" and metrics["defense_settings"] == {"pruning_rate": 60.0} and metrics["iterations"] == 3
    assert (tmp_path / "original" / "reconstruction.png").is_file()


def test_the_gpu_checks_refuse_unknown_arguments():
    proc = subprocess.run(["bash", "bench/gpu_checks.sh", "--fast"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "usage: bash bench/gpu_checks.sh [--smoke]"
