import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "soteria_lib.reconstruct", *args, "--no_progress"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_main_example_runs_without_any_dataset(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "run"
    proc = _cli("--attack=dlg", "--target_id=-1", "--defense=ours", "--pruning_rate=60", "--save_image",
                "--max_iterations", "3", f"--output={out}", cwd=tmp_path, env_extra={"SOTERIA_DATA": str(empty)})
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("attack", "defense", "pruning_rate", "dataset", "target_id", "seed", "mse", "psnr", "ssim",
                "label_correct", "iterations", "seconds", "device"):
        assert key in metrics, key
    assert metrics["defense"] == "ours" and metrics["pruning_rate"] == 60 and metrics["iterations"] == 3
    png = (out / "reconstruction.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "reconstruction.png"]


@pytest.mark.parametrize("args, needle", [
    (["--defense=magic"], "invalid choice"),
    (["--attack", "nope"], "invalid choice"),
    (["--dataset=svhn"], "invalid choice"),
    (["--pruning_rate=100"], "pruning_rate"),
    (["--pruning_rate", "-5", "--defense=prune"], "pruning_rate"),
    (["--max_iterations=-1"], "max_iterations"),
    (["--target_id=-7"], "target_id"),
    (["--target_id=3", "--data_root=/nonexistent/soteria"], "SOTERIA_DATA"),
    (["--pruning_rate=abc"], "invalid float"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    proc = _cli(*args, f"--output={out}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_data_path_is_an_alias_and_both_flag_styles_parse():
    from soteria_lib.reconstruct import build_parser
    a = build_parser().parse_args(["--data_path=/x", "--pruning_rate", "60", "--defense=ours"])
    assert a.data_root == "/x" and a.pruning_rate == 60.0 and a.defense == "ours"
