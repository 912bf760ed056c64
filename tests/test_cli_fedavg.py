"""The FedAvg command line: usage errors, and the paper's utility claim at teaching scale."""
import json

import pytest

from soteria_lib import fedavg
from soteria_lib.federated import read_result


def test_usage_errors_name_the_fedavg_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        fedavg.main(["--no_such_flag"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("soteria-fedavg: error: unrecognized arguments")


@pytest.mark.parametrize("args, needle", [
    (["--alpha", "0"], "alpha"),
    (["--alpha", "inf"], "alpha"),
    (["--lr", "nan"], "lr"),
    (["--iid", "--alpha", "0.5"], "not allowed with argument"),
    (["--defense", "prune", "--noise", "0.1"], "noise does not apply to defense 'prune'"),
    (["--defense", "soteria", "--pruning_rate", "100"], "pruning_rate"),
])
def test_bad_flags_are_refused_before_any_work(tmp_path, capsys, args, needle):
    out = tmp_path / "run"
    try:
        code = fedavg.main([*args, "--output", str(out), "--no_progress"])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


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
