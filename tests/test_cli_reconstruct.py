"""The reconstruction command line: the original repository's flags, bad input, Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import WAIT, catches, finish, interrupt, run_main, start, wait_for_step, wait_until

from soteria_lib.reconstruct import main

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "soteria_lib.reconstruct", *args, "--no_progress"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=WAIT)


def test_main_example_runs_without_any_dataset(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "run"
    proc = _cli("--attack=dlg", "--target_id=-1", "--defense=ours", "--pruning_rate=60", "--save_image",
                "--max_iterations", "3", f"--output={out}", cwd=tmp_path, env_extra={"SOTERIA_DATA": str(empty)})
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("attack", "defense", "defense_settings", "dataset", "target_id", "seed", "mse", "psnr", "ssim",
                "label_correct", "iterations", "seconds", "device"):
        assert key in metrics, key
    assert metrics["defense"] == "ours" and metrics["defense_settings"] == {"pruning_rate": 60.0} and metrics["iterations"] == 3
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
    (["--pruning_rate=abc"], "--pruning_rate: must be a finite number, got 'abc'"),
    (["--restarts=0"], "restarts"),
    (["--tv=-1"], "tv"),
    (["--cost_fn=cos"], "unknown cost_fn 'cos'"),
    (["--optimizer=rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--model=resnet"], "invalid choice"),
    (["--attack=dlg", "--tv=0.1"], "has no option 'tv'"),
    (["--epsilon=nan", "--defense=ours", "--pruning_rate=10"], "--epsilon: must be a finite number"),
    (["--epsilon=inf", "--defense=ours", "--pruning_rate=10"], "--epsilon: must be a finite number"),
    (["--tv=inf"], "--tv: must be a finite number"),
    (["--pruning_rate=nan", "--defense=prune"], "--pruning_rate: must be a finite number"),
    (["--noise=inf", "--defense=dp-laplace"], "--noise: must be a finite number"),
    (["--clip=nan", "--defense=dp-gaussian"], "--clip: must be a finite number > 0"),
    (["--seed=4294967296"], "--seed: must be an integer in [0, 4294967295]"),
    (["--seed=1180591620717411303424"], "--seed: must be an integer"),
    (["--seed=-1"], "--seed: must be an integer"),
    (["--pruning_rate=60"], "pruning_rate does not apply to defense 'none'"),
    (["--defense=dp-gaussian", "--noise=0.1", "--pruning_rate=60"], "pruning_rate does not apply"),
    (["--defense=prune", "--pruning_rate=10", "--epsilon=0.1"], "epsilon does not apply to defense 'prune'"),
    (["--output=/proc/soteria-out"], "is not writable"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    assert run_main(main, [*args, "--no_progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_output_that_is_a_file_is_refused_before_the_attack(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    proc = _cli("--output=taken", "--max_iterations=100000", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == ("soteria-reconstruct: error: output folder taken "
                                                           "exists and is not a folder")


def test_data_path_is_an_alias_and_both_flag_styles_parse():
    from soteria_lib.reconstruct import build_parser
    a = build_parser().parse_args(["--data_path=/x", "--pruning_rate", "60", "--defense=ours"])
    assert a.data_root == "/x" and a.pruning_rate == 60.0 and a.defense == "ours"


@pytest.mark.parametrize("defense", ["ours", "prune"])
def test_the_original_readme_commands_run_gs_end_to_end(tmp_path, defense):
    """The seed repository's usage, shortened: GS on an untrained ConvNet, CIFAR-10, 60 % pruning."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    out, images = tmp_path / "run", tmp_path / "images"
    proc = _cli("--target_id=-1", f"--defense={defense}", "--pruning_rate=60", "--save_image",
                "--max_iterations=3", f"--image_path={images}", f"--output={out}",
                cwd=tmp_path, env_extra={"SOTERIA_DATA": str(empty)})
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["attack"] == "gs" and metrics["model"] == "convnet" and metrics["dataset"] == "cifar10"
    assert metrics["defense"] == defense and metrics["iterations"] == 3 and metrics["restarts"] == 1
    for key in ("mse", "mse_normalized", "psnr", "matching_loss", "restart_matching_losses", "best_restart"):
        assert key in metrics, key
    assert metrics["matching_loss"] == metrics["restart_matching_losses"][0]
    assert (images / "reconstruction.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_dryrun_runs_one_iteration_with_the_gs_flags(tmp_path):
    out = tmp_path / "run"
    proc = _cli("--dryrun", "--restarts=2", "--tv=0", "--cost_fn=l2", "--optimizer=sgd", f"--output={out}",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 1 and metrics["restarts"] == 2
    assert metrics["attack_options"] == {"restarts": 2, "tv": 0.0, "cost_fn": "l2", "optimizer": "sgd",
                                         "max_iterations": 1}
    config = metrics["attack_config"]
    assert (config["restarts"], config["tv"], config["cost_fn"], config["optimizer"]) == (2, 0.0, "l2", "sgd")


def test_ctrl_c_still_writes_metrics_and_image(tmp_path, monkeypatch):
    from soteria_lib.models import ConvNet

    calls = {"n": 0}
    original = ConvNet.forward

    def forward(self, x):
        calls["n"] += 1
        if calls["n"] == 6:  # the client's forward, then a few attack steps
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(ConvNet, "forward", forward)
    out = tmp_path / "run"
    assert main(["--max_iterations=50", "--save_image", "--no_progress", f"--output={out}"]) == 130
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and 0 < metrics["iterations"] < 50
    assert (out / "reconstruction.png").is_file()


def test_cli_flags_reach_the_run(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "soteria_lib.reconstruct", "--attack=dlg", "--defense=dp-laplace",
                           "--noise=0.01", "--clip=5", "--adaptive", "--max_iterations=2", "--no_progress",
                           f"--output={out}"], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["defense"], metrics["defense_settings"]) == ("dp-laplace", {"scale": 0.01, "clip": 5.0})
    assert metrics["attack_config"]["adaptive"] and metrics["attack_config"]["max_iterations"] == 2


def test_cli_attacker_sets_its_battery_options(tmp_path):
    from soteria_lib.reconstruct import build_parser, setup_from

    setup = setup_from(build_parser().parse_args(["--attacker=closed-form", "--max_iterations=3"]))
    assert setup.attack_options["adaptive"] and setup.attack_options["representation_prior"] > 0
    assert setup.attack_options["max_iterations"] == 3
    assert setup_from(build_parser().parse_args(["--attacker=layer-dropping"])).attack_options == {
        "drop_defended_layer": True}




@pytest.mark.parametrize("args, needle", [
    (["--defense=dp-gaussian", "--noise=-1"], "--noise: must be a finite number >= 0"),
    (["--defense=dp-laplace", "--noise=0.1", "--clip=0"], "clip"),
    (["--defense=soteria", "--pruning_rate=10", "--noise=0.1"], "noise does not apply to defense 'soteria'"),
])
def test_bad_noise_flags_are_one_line_errors(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "soteria_lib.reconstruct", "--attack=dlg", *args, "--no_progress",
                           f"--output={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=WAIT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_attack_and_keeps_its_best_result(tmp_path, sig, code):
    out = tmp_path / "run"
    process = start("reconstruct", "--attack=dlg", "--dataset=mnist", "--max_iterations=100000", "--save_image",
                    f"--output={out}", cwd=tmp_path)
    wait_for_step(process, "DLG")  # a finished L-BFGS step: the attack holds a best image
    interrupt(process, sig)
    returncode, err = finish(process)
    assert returncode == code and "Traceback" not in err, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["iterations"] < 100000
    assert (out / "reconstruction.png").read_bytes().startswith(b"\x89PNG")


def test_two_quick_signals_never_leave_an_image_without_its_metrics(tmp_path):
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        process = start("reconstruct", "--attack=dlg", "--dataset=mnist", "--max_iterations=100000",
                        "--save_image", f"--output={out}", cwd=tmp_path)
        wait_for_step(process, "DLG")  # the saving path, not the one before any step
        interrupt(process)
        time.sleep(0.05 * attempt)
        if process.poll() is None:
            interrupt(process)
        returncode, err = finish(process)
        assert returncode == 130 and "Traceback" not in err, err
        written = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert written in ([], ["metrics.json", "reconstruction.png"]), written


@pytest.mark.parametrize("module", ["reconstruct", "fedavg", "experiments"])
def test_a_signal_while_the_command_line_starts_is_one_line_not_a_traceback(tmp_path, module):
    """The handlers come before torch's import (a second or more): from the moment they are in
    place, a Ctrl-C is one line and 130, and nothing is written."""
    args = {"reconstruct": ["--attack=dlg", "--max_iterations=100000"], "fedavg": ["--rounds=500"],
            "experiments": ["run", str(ROOT / "experiments" / "teaching.toml")]}[module]
    process = start(module, *args, "--output", str(tmp_path / "out"), "--no_progress", cwd=tmp_path)
    wait_until(lambda: catches(process.pid, signal.SIGTERM), what="the signal handlers")
    interrupt(process)
    returncode, err = finish(process)
    lines = err.strip().splitlines()
    assert returncode == 130 and "Traceback" not in err and "interrupted" in lines[-1], err
    assert not (tmp_path / "out").exists() or module == "experiments"
