"""The convergence study that chooses attack budgets: its file format, its curves, its command."""
import pytest

from soteria_lib import experiments
from soteria_lib.metrics import REBUILT_PSNR
from soteria_lib.sweep.budget_study import STUDY_TABLE, curves, load_study
from soteria_lib.sweep.grid import GridError

TINY = """
images = [-1]
seeds = [0, 1]

[studies.dlg]
attack = "dlg"
datasets = ["mnist"]
max_iterations = 6
every = 2
"""


def test_a_tiny_study_runs_resumes_and_summarises(tmp_path, capsys):
    study = tmp_path / "tiny.toml"
    study.write_text(TINY)
    csv = tmp_path / "tiny.csv"
    assert experiments.main(["study", str(study), "--output", str(csv), "--no_progress"]) == 0
    rows = STUDY_TABLE.read_rows(csv)
    runs = {(r["seed"]) for r in rows}
    assert runs == {0, 1}
    for seed in runs:
        steps = sorted(r["iteration"] for r in rows if r["seed"] == seed)
        assert steps[:3] == [0, 2, 4] and steps[-1] <= 6  # every 2 steps, then the returned image
    found = curves(rows)
    assert len(found) == 1 and found[0].runs == 2 and found[0].iterations == [0, 2, 4, 6]
    assert all(0.0 <= r <= 1.0 for r in found[0].reconstructed)
    text = (tmp_path / "tiny.md").read_text()
    assert "## dlg on mnist" in text and f"PSNR >= {REBUILT_PSNR:g} dB" in text
    assert (tmp_path / "tiny.png").read_bytes().startswith(b"\x89PNG")
    before = csv.read_bytes()
    assert experiments.main(["study", str(study), "--output", str(csv), "--no_progress"]) == 0
    assert csv.read_bytes() == before  # nothing run twice
    assert "0 runs to do, 2 already done" in capsys.readouterr().err


def test_curves_carry_a_stopped_run_forward_and_count_reconstructions():
    base = dict(study="s", dataset="mnist", attack="dlg", max_iterations=4, every=2, stop_reason="budget",
                seconds=1.0)
    rows = [dict(base, target_id=0, seed=0, iteration=0, psnr=5.0),
            dict(base, target_id=0, seed=0, iteration=2, psnr=30.0),
            dict(base, target_id=0, seed=0, iteration=4, psnr=40.0),
            dict(base, target_id=1, seed=0, iteration=0, psnr=6.0, stop_reason="converged"),
            dict(base, target_id=1, seed=0, iteration=1, psnr=25.0, stop_reason="converged")]
    curve, = curves(rows)
    assert curve.iterations == [0, 2, 4]
    assert curve.median_psnr == [5.5, 27.5, 32.5]  # run 1 keeps 25 dB after it stopped at step 1
    assert curve.reconstructed == [0.0, 1.0, 1.0] and curve.stop_reasons == {"budget": 1, "converged": 1}


@pytest.mark.parametrize("text, needle", [
    (TINY.replace('attack = "dlg"', 'attack = "nope"'), "unknown attack 'nope'"),
    (TINY.replace("every = 2", "every = 9"), "1 <= every <= max_iterations"),
    (TINY.replace('datasets = ["mnist"]', 'datasets = ["svhn"]'), "datasets must name"),
    (TINY.replace("seeds = [0, 1]", "seeds = [4294967296]"), "a seed is an integer"),
    (TINY.replace("every = 2", "every = 2\nimages = []"), "images must be a non-empty list"),
    (TINY + "restarts = 2\n", "unknown key(s) ['restarts']"),
    (TINY.replace("every = 2", "every = 2\nattack_options = {tv = 0.1}"), "has no option 'tv'"),
    ("images = [0]\nseeds = [0]\n", "no [studies.NAME] table"),
])
def test_bad_study_files_are_one_line(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(GridError) as info:
        load_study(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
