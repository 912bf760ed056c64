"""Every number checked against what the code downstream can hold, and every grid key against its
type: at parse time on the command lines, at load time for grids and studies; one line naming the
flag or key, exit 2, nothing written (soteria_lib.limits)."""
import pytest
from processes import run_main

from soteria_lib import experiments, fedavg, reconstruct
from soteria_lib.limits import LIMITS, check_count, check_counts

HUGE = "100000000000000000000"  # 10**20: past 2**63, which C sizes in torch and tqdm cannot hold


@pytest.mark.parametrize("main, argv, needle", [
    (reconstruct.main, ["--max_iterations", HUGE], "--max_iterations: must be at most 1,000,000,000"),
    (reconstruct.main, ["--max_iterations", "1e20"], "--max_iterations: must be an integer >= 0, got '1e20'"),
    (reconstruct.main, ["--restarts", HUGE], "--restarts: must be at most 1,000"),
    (reconstruct.main, ["--restarts", "1e20"], "--restarts: must be a positive integer, got '1e20'"),
    (reconstruct.main, ["--restarts", "1001"], "--restarts: must be at most 1,000"),
    (fedavg.main, ["--clients", HUGE], "--clients: must be at most 1,000,000"),
    (fedavg.main, ["--rounds", HUGE], "--rounds: must be at most 1,000,000"),
    (fedavg.main, ["--local_epochs", HUGE], "--local_epochs: must be at most 1,000,000"),
    (fedavg.main, ["--batch_size", HUGE], "--batch_size: must be at most 1,000,000"),
    (experiments.main, ["run", "grid.toml", "--workers", HUGE], "--workers: must be at most 1,024"),
    (experiments.main, ["run", "grid.toml", "--threads", HUGE], "--threads: must be at most 1,024"),
    (experiments.main, ["study", "study.toml", "--workers", "1e20"], "--workers: must be a positive integer"),
    (experiments.main, ["run", "grid.toml", "--backend", "ray", "--address", ""], "--address: a Ray address is "
                                                                                  "HOST:PORT"),
    (experiments.main, ["run", "grid.toml", "--backend", "ray", "--address", "head"], "got 'head'"),
    (experiments.main, ["run", "grid.toml", "--backend", "ray", "--address", "head:65536"], "must be in 1..65535"),
])
def test_a_count_no_run_can_hold_is_refused_when_the_flags_are_parsed(tmp_path, monkeypatch, capsys, main, argv,
                                                                      needle):
    monkeypatch.chdir(tmp_path)
    assert run_main(main, [*argv, "--no_progress"] if main is not experiments.main else argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in lines[0], lines
    assert list(tmp_path.iterdir()) == []




def _grid(top: str, rest: str) -> str:
    """A grid of the embedded photograph with ``top`` among its top-level keys and ``rest`` after
    its defenses."""
    keys = {"scale": '"teaching"', "images": "[-1]", "seeds": "[0]"}
    lines = [f"{k} = {v}" for k, v in keys.items() if not top.startswith(k)]
    return "\n".join([*lines, top, "[defenses]", "none = true", "", rest, ""])


DLG = '[attacks.dlg]\ndatasets = ["mnist"]\n'
BAD_GRIDS = [
    ("", DLG + "max_iterations = 99999999999999999999",
     "attacks.dlg.max_iterations.mnist must be at most 1,000,000,000"),
    ("", DLG + "max_iterations = {mnist = 10000000000}", "attacks.dlg.max_iterations.mnist must be at most"),
    ("", '[attacks.gs]\ndatasets = ["mnist"]\nattack_options = {restarts = 5000}',
     "attacks.gs.attack_options: restarts must be at most 1,000"),
    ("", DLG + "attack_options = {patience = 99999999999999999999}", "attack_options: patience must be at most"),
    ('fedavg = "x"', DLG, "fedavg: expected dict, got 'x'"),
    ("fedavg = 3", DLG, "fedavg: expected dict, got 3"),
    ("", DLG + '[fedavg]\ndatasets = ["mnist"]\noutput = 3', "fedavg.output: expected str, got 3"),
    ("", DLG + '[fedavg]\ndatasets = ["mnist"]\noptions = {rounds = 99999999999999999999}',
     "fedavg.options: rounds must be at most 1,000,000"),
    ("", DLG + '[fedavg]\ndatasets = ["mnist"]\noptions = {clients = 10000000}',
     "fedavg.options: clients must be at most 1,000,000"),
    ("", DLG + '[fedavg]\ndatasets = ["mnist"]\noptions = {batch_size = 0}', "fedavg.options: batch_size must be"),
    ('attacks = "dlg"', "", "grid.attacks: expected dict, got 'dlg'"),
    ("", "[attacks]\ndlg = 3", "attacks.dlg: expected dict, got 3"),
    ("", '[attacks.dlg]\ndatasets = "mnist"', "attacks.dlg.datasets: expected list"),
    ("", DLG + 'max_iterations = "many"', "attacks.dlg.max_iterations.mnist must be an integer"),
    ("", DLG + "attack_options = 3", "attacks.dlg.attack_options: expected dict"),
    ('images = "all"', DLG, "grid.images: expected list"),
]


@pytest.mark.parametrize("top, rest, needle", BAD_GRIDS)
@pytest.mark.parametrize("command", ["run", "summarize --grid"])
def test_a_grid_with_a_number_too_large_or_a_key_of_the_wrong_type_is_one_line(tmp_path, capsys, top, rest, needle,
                                                                               command):
    grid = tmp_path / "grid.toml"
    grid.write_text(_grid(top, rest))
    if command == "run":
        argv = ["run", str(grid), "--output", str(tmp_path / "out.csv"), "--no_progress"]
    else:
        csv = tmp_path / "r.csv"
        csv.write_text("unused")
        argv = ["summarize", str(csv), "--grid", str(grid), "--output", str(tmp_path / "s.md")]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_main(experiments.main, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before


STUDY = 'images = [0]\nseeds = [0]\n\n[studies.s]\nattack = "gs"\ndatasets = ["mnist"]\n{keys}\n'
BAD_STUDIES = [
    ("max_iterations = 10\nevery = 5\nmodel_options = {width = -3}",
     "studies.s: width must be an integer >= 1, got -3"),
    ("max_iterations = 10\nevery = 5\nmodel_options = {width = 5000}", "studies.s: width must be at most 512"),
    ("max_iterations = 10\nevery = 5\nmodel_options = {depth = 3}", "studies.s: ConvNet"),
    ('max_iterations = 10\nevery = 5\nmodel_options = "wide"', "studies.s: attack_options and model_options are "
                                                               "tables"),
    ("max_iterations = 99999999999999999999\nevery = 5", "studies.s: max_iterations must be at most 1,000,000,000"),
    ("max_iterations = 100000\nevery = 1", "studies.s: max_iterations / every must be at most 10,000"),
    ("max_iterations = 10\nevery = 5\nattack_options = {restarts = 5000}", "studies.s: restarts must be at most"),
]


@pytest.mark.parametrize("keys, needle", BAD_STUDIES + [(None, "studies must be [studies.NAME] tables")])
def test_a_study_with_a_number_its_runs_cannot_hold_is_refused_at_load(tmp_path, capsys, keys, needle):
    study = tmp_path / "study.toml"
    study.write_text('studies = "all"\n' if keys is None else STUDY.format(keys=keys))
    assert run_main(experiments.main, ["study", str(study), "--output", str(tmp_path / "out.csv")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_every_limit_takes_its_range_and_refuses_one_past_it(name):
    limit = LIMITS[name]
    assert check_count(name, limit.minimum) == limit.minimum and check_count(name, limit.maximum) == limit.maximum
    for value in (limit.minimum - 1, limit.maximum + 1, 2**63, float(limit.maximum), True, "1"):
        with pytest.raises(ValueError, match=f"^{name} must be"):
            check_count(name, value)
    check_counts({name: limit.maximum, "not a count": 10**30})  # names that are not counts are left alone
