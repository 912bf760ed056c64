"""The FedAvg command line: usage errors, and the paper's utility claim at teaching scale."""
import json
import shutil
import signal

import pytest
import torch
from processes import finish, interrupt, run_main, start, wait_until

from soteria_lib import fedavg
from soteria_lib.federated import load_checkpoint, read_result

# A run that would take long: 2 clients, one trained per round, many rounds.
LONG = ["--rounds", "500", "--clients", "2", "--fraction", "0.5", "--no_progress", "--device", "cpu"]


def test_usage_errors_name_the_fedavg_command(capsys):
    assert run_main(fedavg.main, ["--no_such_flag"]) == 2
    assert capsys.readouterr().err.startswith("soteria-fedavg: error: unrecognized arguments")


@pytest.mark.parametrize("args, needle", [
    (["--alpha", "0"], "--alpha: must be a finite number > 0"),
    (["--alpha", "inf"], "--alpha: must be a finite number > 0"),
    (["--lr", "inf"], "--lr: must be a finite number > 0"),
    (["--lr", "nan"], "--lr: must be a finite number > 0"),
    (["--fraction", "1.5"], "fraction must be in (0, 1]"),
    (["--clients", "0"], "--clients: must be a positive integer"),
    (["--batch_size", "0"], "--batch_size: must be a positive integer"),
    (["--rounds", "-1"], "--rounds: must be an integer >= 0"),
    (["--seed", "4294967296"], "--seed: must be an integer in [0, 4294967295]"),
    (["--iid", "--alpha", "0.5"], "not allowed with argument"),
    (["--defense", "prune", "--noise", "0.1"], "noise does not apply to defense 'prune'"),
    (["--pruning_rate", "50"], "pruning_rate does not apply to defense 'none'"),
    (["--defense", "dp-gaussian", "--noise", "0.1", "--pruning_rate", "50"], "pruning_rate does not apply"),
    (["--defense", "soteria", "--pruning_rate", "100"], "pruning_rate must be a percentage in [0, 100)"),
    (["--defense", "soteria", "--pruning_rate", "nan"], "--pruning_rate: must be a finite number"),
    (["--defense", "dp-laplace", "--noise", "inf"], "--noise: must be a finite number >= 0"),
    (["--defense", "dp-laplace", "--noise", "0.1", "--clip", "0"], "--clip: must be a finite number > 0"),
    (["--dataset", "svhn"], "invalid choice"),
    (["--output", "/proc/soteria-fedavg"], "is not writable"),
    (["--data_root", "/nonexistent/soteria"], "SOTERIA_DATA"),
])
def test_bad_flags_are_refused_before_any_work(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    output = [] if "--output" in args else ["--output", "run"]
    assert run_main(fedavg.main, [*args, *output, "--no_progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_short_run_writes_its_result_and_where_it_ran(tmp_path, data_root):
    out = tmp_path / "run"
    assert fedavg.main(["--rounds", "1", "--clients", "2", "--fraction", "0.5", "--data_root", str(data_root),
                        "--output", str(out), "--no_progress", "--device", "cpu"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["rounds"] == 1 and result["iid"] and len(result["history"]) == 2
    assert {"torch_version", "cpu_capability", "torch_threads", "device"} <= set(result)
    assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_soteria_at_50_percent_keeps_teaching_scale_mnist_accuracy_within_2_points(data_root, tmp_path):
    """The paper's utility claim at our teaching scale (the CLI's defaults: 6,000 MNIST
    images, 10 clients, 5 rounds): same seed, with and without Soteria on every local step."""
    accuracy = {}
    for defense, flags in {"none": [], "soteria": ["--pruning_rate", "50"]}.items():
        out = tmp_path / defense
        assert fedavg.main(["--defense", defense, *flags, "--data_root", str(data_root), "--output", str(out),
                            "--no_progress", "--seed", "0"]) == 0
        accuracy[defense] = read_result(out)["final_accuracy"]
    assert accuracy["none"] > 0.85  # the undefended model has learned: the comparison means something
    assert abs(accuracy["soteria"] - accuracy["none"]) <= 0.02


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_keeps_the_checkpoint_and_says_so_in_one_line(tmp_path, data_root, sig, code):
    out = tmp_path / "run"
    process = start("fedavg", *LONG, "--data_root", str(data_root), "--output", str(out), cwd=tmp_path)
    wait_until(lambda: (out / "checkpoint.pt").exists(), what="the first checkpoint")
    interrupt(process, sig)
    returncode, err = finish(process)
    lines = err.strip().splitlines()
    assert returncode == code and len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, err
    assert len(load_checkpoint(out / "checkpoint.pt")["history"]) >= 2  # round 0 and a finished round
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("content, needle", [
    (b"", "cannot be read"), (b"\x80\x04 truncated", "cannot be read"), ("foreign", "was not written by FedAvg"),
])
def test_a_damaged_or_foreign_checkpoint_is_one_line(tmp_path, capsys, data_root, content, needle):
    out = tmp_path / "run"
    out.mkdir()
    if content == "foreign":
        torch.save({"weights": torch.zeros(2)}, out / "checkpoint.pt")
    else:
        (out / "checkpoint.pt").write_bytes(content)
    assert run_main(fedavg.main, [*LONG, "--data_root", str(data_root), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "checkpoint.pt" in err[0], err


def test_resuming_on_other_data_is_refused(tmp_path, capsys, data_root):
    other = tmp_path / "other-data" / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", other)
    labels = other / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[8] = (data[8] + 1) % 10  # one test label changed: another data source
    labels.write_bytes(bytes(data))
    out = tmp_path / "run"
    flags = ["--rounds", "1", "--clients", "2", "--fraction", "0.5", "--no_progress", "--output", str(out)]
    assert run_main(fedavg.main, [*flags, "--data_root", str(data_root)]) == 0
    (out / "metrics.json").unlink()
    assert run_main(fedavg.main, [*flags, "--data_root", str(tmp_path / "other-data")]) == 2
    assert "another configuration or data" in capsys.readouterr().err


def test_a_diverging_run_fails_with_one_line_and_no_result(tmp_path, capsys, data_root):
    out = tmp_path / "run"
    assert run_main(fedavg.main, ["--rounds", "1", "--clients", "2", "--fraction", "0.5", "--lr", "1e30",
                                  "--no_progress", "--data_root", str(data_root), "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed" in err[0] and ("NaN" in err[0] or "diverged" in err[0]), err
    assert not (out / "metrics.json").exists()
