"""The summary's statistics on hand-made numbers with known answers: bootstrap intervals, the
matching rule, the worst case over attackers and the verdict (chapter 5)."""
import json
import math

import pytest

from soteria_lib import experiments
from soteria_lib.defenses import DefenseSetting
from soteria_lib.sweep.grid import FedAvgSpec
from soteria_lib.sweep.report import short_verdict
from soteria_lib.sweep.results import COLUMNS, append_row, prepare
from soteria_lib.sweep.statistics import (difference_interval, difference_upper, matches, mean_interval,
                                          median_interval, proportion_interval, ratio_interval)
from soteria_lib.sweep.summary import WORST, summarize


def test_median_interval_of_five_values_spans_them():
    """Resampling 1..5, a median of 1 has probability 5.8 % (three or more draws of 1 among five),
    above the 2.5 % tail, so the percentile interval is exactly [1, 5]."""
    estimate = median_interval([3.0, 1.0, 5.0, 2.0, 4.0])
    assert (estimate.value, estimate.low, estimate.high, estimate.n) == (3.0, 1.0, 5.0, 5)
    assert median_interval([2.0] * 4) == median_interval([2.0] * 4) and median_interval([2.0] * 4).low == 2.0
    single = median_interval([0.7])
    assert single.value == 0.7 and single.low is None
    diverged = median_interval([0.1, 0.2, math.inf, math.inf, math.inf])
    assert diverged.value == math.inf and diverged.low <= 0.2


def test_ratio_interval_is_paired_and_capped():
    ratio = ratio_interval([0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.1, 0.2])
    assert ratio.value == pytest.approx(0.65 / 0.15)
    assert 0.5 / 0.2 <= ratio.low <= ratio.value <= ratio.high <= 0.8 / 0.1
    assert ratio_interval([math.inf, 5.0], [0.5, 0.5]).value == pytest.approx(2.0)  # both count as 1
    assert ratio_interval([0.0, 0.0], [0.0, 0.0]) is None
    with pytest.raises(ValueError, match="equal"):
        ratio_interval([1.0], [1.0, 2.0])


def test_fractions_rebuilt_get_wilson_intervals_and_paired_differences():
    z2 = 1.959963984540054 ** 2
    none = proportion_interval(0, 10)  # Wilson: [0, z^2 / (n + z^2)]
    assert (none.value, none.low) == (0.0, 0.0) and none.high == pytest.approx(z2 / (10 + z2))
    half = proportion_interval(5, 10)  # symmetric about 1/2
    assert half.low == pytest.approx(1 - half.high) and half.low == pytest.approx(0.2366, abs=1e-4)
    with pytest.raises(ValueError, match="no runs"):
        proportion_interval(0, 0)
    gap = difference_interval([1, 1, 1, 0], [0, 0, 0, 0])
    assert gap.value == 0.75 and 0.0 <= gap.low <= 0.75 <= gap.high == 1.0
    assert difference_interval([1, 0, 1], [1, 0, 1]) == difference_interval([0, 0, 0], [0, 0, 0])
    assert difference_interval([1, 0, 1], [1, 0, 1]).low == 0.0


def test_mean_interval_is_student_t():
    estimate = mean_interval([0.90, 0.91, 0.92])
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert estimate.value == pytest.approx(0.91)
    assert (estimate.low, estimate.high) == (pytest.approx(0.91 - half), pytest.approx(0.91 + half))
    # three seeds far apart: the t interval of an accuracy would reach below 0; it stops there
    spread = mean_interval([0.05, 0.10, 0.45], within=(0.0, 1.0))
    assert spread.low == 0.0 and spread.high == pytest.approx(0.2 + 4.302652729911275 * 0.2179449 / math.sqrt(3))


def test_matching_rule():
    # one point lower, within the noise of three seeds: matches
    assert matches([0.87, 0.88, 0.86], [0.88, 0.88, 0.88])
    assert difference_upper([0.87, 0.88, 0.86], [0.88, 0.88, 0.88]) == pytest.approx(
        -0.01 + 4.302652729911275 * 0.01 / math.sqrt(3))
    # five points lower: does not
    assert not matches([0.90, 0.91, 0.89], [0.95, 0.95, 0.95])
    # one seed each: the means decide
    assert matches([0.9], [0.9]) and not matches([0.89], [0.9])


def _row(pruning_rate: float = 0.0, **values) -> dict:
    row = {c: "" for c in COLUMNS}
    row.update(attack="dlg", dataset="mnist", scale="teaching", max_iterations=10, attacker="plain",
               attack_options="{}", defense="none", target_id=0, seed=0, model_state="init", local_steps=1,
               model="lenet", model_options="{}", model_seed=0, dummy_seed=0, defense_seed=None, label=0,
               mse=1.0, mse_normalized=1.0, psnr=0.0, ssim=0.0, label_accuracy=1.0, matching_loss=0.0,
               iterations=10, diverged=False, seconds=1.0, cpu_seconds=1.0, attack_seconds=1.0, device="cpu",
               version="0", commit="x", finished_at="t")
    row.update(values)
    row["defense_settings"] = DefenseSetting(row["defense"], pruning_rate).to_json()
    return row


# (defense, rate) -> attacker -> MSE of the runs (image 0..3, seed 0)
CELLS = {
    ("none", 0.0): {"plain": [0.01, 0.02, 0.01, 0.02]},
    ("soteria", 20.0): {"plain": [0.2, 0.3, 0.2, 0.3], "mask-aware": [0.01, 0.01, 0.01, 0.01]},
    ("soteria", 40.0): {"plain": [0.5, 0.6, 0.7, 0.8], "mask-aware": [0.1, 0.9, 0.05, 0.8]},
    ("prune", 20.0): {"plain": [0.1, 0.1, 0.1, 0.1], "mask-aware": [0.1, 0.1, 0.1, 0.1]},
    ("prune", 40.0): {"plain": [0.1, 0.2, 0.1, 0.2], "mask-aware": [0.05, 0.2, 0.3, 0.1]},
    ("prune", 60.0): {"plain": [0.3, 0.3, 0.3, 0.3]},  # only the plain attacker ran: no worst case
}
ACCURACIES = {("none", 0.0): [0.92] * 3, ("soteria", 20.0): [0.90, 0.91, 0.89],
              ("soteria", 40.0): [0.87, 0.88, 0.86], ("prune", 20.0): [0.95] * 3, ("prune", 40.0): [0.88] * 3}


def test_summary_verdict_on_a_hand_made_sweep(tmp_path):
    csv = tmp_path / "hand.csv"
    prepare(csv)
    for (defense, rate), attackers in CELLS.items():
        for attacker, mses in attackers.items():
            for image, mse in enumerate(mses):
                append_row(csv, _row(defense=defense, pruning_rate=rate, attacker=attacker, target_id=image,
                                     mse=mse, mse_normalized=mse, psnr=10 * math.log10(1 / mse)))
    fedavg = tmp_path / "fedavg"
    for (defense, rate), values in ACCURACIES.items():
        for seed, accuracy in enumerate(values):
            spec = FedAvgSpec("mnist", DefenseSetting(defense, rate), "teaching", fedavg, {}, seed)
            spec.folder().mkdir(parents=True)
            (spec.folder() / "metrics.json").write_text(json.dumps({**spec.experiment().identity(),
                                                                    "final_accuracy": accuracy}))
    (group,), accuracies = summarize(csv, fedavg)
    assert group.attackers == ["plain", "mask-aware", WORST]
    assert accuracies[("mnist", DefenseSetting("soteria", 40.0))].mean.value == pytest.approx(0.87)
    worst = group.cell(DefenseSetting("soteria", 40.0), WORST)
    assert worst.runs == 4 and worst.mse.value == pytest.approx(0.35)  # run by run: 0.1, 0.6, 0.05, 0.8
    assert group.cell(DefenseSetting("none", 0.0), WORST).mse == group.cell(DefenseSetting("none", 0.0)).mse
    assert group.cell(DefenseSetting("prune", 60.0), WORST) is None
    # rebuilt: PSNR >= 20 dB, i.e. MSE <= 0.01: two of the four undefended runs, every mask-aware run at 20 %
    assert group.cell(DefenseSetting("none", 0.0)).rebuilt.value == 0.5
    assert group.cell(DefenseSetting("soteria", 20.0), WORST).rebuilt.value == 1.0
    comparisons = {c.baseline: c for c in group.comparisons}
    # prune 40 % (88 %): Soteria 40 % (87 %) matches within the interval and is the strongest that does
    at40 = comparisons[DefenseSetting("prune", 40.0)]
    assert at40.soteria == DefenseSetting("soteria", 40.0)
    assert at40.ratios["plain"].value == pytest.approx(0.65 / 0.15)
    assert at40.ratios[WORST].value == pytest.approx(0.35 / 0.1)  # prune's worst case: 0.05, 0.2, 0.1, 0.1
    assert at40.verdict("plain") == "Soteria leaks less"
    assert at40.rebuilt["plain"].value == 0.0 and at40.verdict("plain", "rebuilt") == "no difference resolved"
    # prune 20 % (95 %): no Soteria setting is that accurate
    assert comparisons[DefenseSetting("prune", 20.0)].soteria is None
    assert comparisons[DefenseSetting("prune", 20.0)].verdict("plain") == "no Soteria setting matches"
    # the claim is judged at the highest Soteria rate that matched any baseline, and against no defense
    assert group.strongest_matched() == DefenseSetting("soteria", 40.0)
    assert group.undefended() == DefenseSetting("none", 0.0)
    # chapter 5's short verdict: runs rebuilt with no defense, then against that setting by the plain
    # attacker and by the worst case (run by run 0.1, 0.6, 0.05, 0.8: none at 20 dB)
    header, _, row = short_verdict([group])
    assert header.count("|") == 5 and "attacker that knows it" in header
    assert row == "| DLG, MNIST (Soteria 40%) | 50 % (2/4) | 0 % (0/4) | 0 % (0/4) |"

    out = tmp_path / "report" / "summary.md"
    assert experiments.main(["summarize", str(csv), "--fedavg", str(fedavg), "--output", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    (stored,) = data["groups"]
    assert [c["soteria"] for c in stored["comparisons"]] == [None, "soteria 40%"]
    assert "| DLG | MNIST | prune 40% (88 [88, 88] %) | soteria 40% (87 [84.5, 89.5] %) | 4.33 [" in out.read_text()
    # the claim, measured: the largest matched ratio over pruning and the undefended runs rebuilt (2 of 4)
    claim = next(line for line in out.read_text().splitlines() if line.startswith("| DLG | MNIST | 4.33 ["))
    assert "(prune 40%)" in claim and "| soteria 40% | 50 [" in claim and "(2/4)" in claim
    for name in ("summary_mse_vs_rate.png", "summary_mse_vs_accuracy.png"):
        assert (out.parent / name).read_bytes().startswith(b"\x89PNG")


def test_the_summary_names_the_cells_a_grid_still_lacks(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('scale = "teaching"\nimages = [0, 1, 2, 3, 4]\nseeds = [0]\n[defenses]\nnone = true\n'
                         'soteria = [40]\n[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = 10\n'
                         'attackers = ["plain", "layer-dropping"]\n')
    csv = tmp_path / "part.csv"
    prepare(csv)
    for image in range(5):
        append_row(csv, _row(target_id=image, mse=0.01))
    for image in range(2):
        append_row(csv, _row(defense="soteria", pruning_rate=40.0, target_id=image, mse=2.0, diverged=True))
    append_row(csv, _row(attacker="mask-aware", mse=0.01))  # a row of a cell the grid no longer has
    out = tmp_path / "s.md"
    assert experiments.main(["summarize", str(csv), "--fedavg", str(tmp_path / "none"), "--grid", str(grid_file),
                             "--output", str(out)]) == 0
    missing = json.loads(out.with_suffix(".json").read_text())["incomplete_cells"]
    assert [(m["setting"], m["attacker"], m["runs"], m["expected"]) for m in missing] == [
        ("soteria 40%", "plain", 2, 5), ("soteria 40%", "layer-dropping", 0, 5)]
    text = out.read_text()
    assert "2 cells of the grid are not complete yet" in text and "(n=2/5, 2 div.)" in text
    assert "(n=1, not in the grid)" in text and "/0" not in text
    # the worst case reads only the attackers the grid asks for: the stray row does not cut it to one run
    (group,) = json.loads(out.with_suffix(".json").read_text())["groups"]
    worst_none = [c for c in group["cells"] if c["label"] == "none" and c["attacker"] == WORST]
    assert [c["runs"] for c in worst_none] == [5]
