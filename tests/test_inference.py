"""The verdict's statistics on hand-made data with known answers (issue 26): the two-stage
bootstrap, Hodges-Lehmann, Newcombe's paired interval, Holm, the frontier, non-inferiority, and
the verdict itself on a hand-made sweep."""
import math

import numpy as np
import pytest

from soteria_lib.defenses import DefenseSetting
from soteria_lib.sweep.inference import (envelope, frontier, hodges_lehmann, holm, mcnemar_p, newcombe_interval,
                                         non_inferior, two_stage_interval, wilson)
from soteria_lib.sweep.accuracy import Accuracy, late_gain
from soteria_lib.sweep.statistics import mean_interval
from soteria_lib.sweep.verdict import WORST, Design, Plan, build, choose_baseline, compare, effective_psnr, make_cell


def test_hodges_lehmann_is_the_median_of_walsh_averages():
    assert hodges_lehmann([1, 2, 3, 10]) == 2.75  # Walsh averages 1, 1.5, 2, 2.5, 2, 2.5, 5.5, 3, 6.5, 10
    assert hodges_lehmann([-4.0]) == -4.0
    assert hodges_lehmann([0, 0, 0, 100]) == 0  # robust to one runaway run


def test_the_second_stage_resamples_only_within_drawn_seeds():
    # Each seed's images are identical, so only the first stage varies: the interval of the mean
    # is the spread of means of seeds drawn with replacement, inside [min, max] of the seed values.
    by_seed = {0: [0.0] * 10, 1: [0.5] * 10, 2: [1.0] * 10}
    found = two_stage_interval(by_seed, np.mean)
    assert found.value == 0.5 and found.seeds == 3 and found.n == 30
    assert 0.0 <= found.low < 0.5 < found.high <= 1.0
    naive = two_stage_interval({i: [v] for i, v in enumerate([0.0] * 10 + [0.5] * 10 + [1.0] * 10)}, np.mean)
    assert found.high - found.low > 2 * (naive.high - naive.low)  # clusters widen the interval


def test_an_effect_in_every_seed_is_resolved_and_none_is_not():
    rng = np.random.default_rng(1)
    shifted = {s: list(3 + rng.normal(size=10)) for s in range(3)}
    centred = {s: list(rng.normal(size=10)) for s in range(3)}
    assert two_stage_interval(shifted, hodges_lehmann).side() == "above"
    assert two_stage_interval(shifted, hodges_lehmann).p < 0.01
    constant = two_stage_interval({s: [1.0] * 10 for s in range(3)}, np.mean, resamples=99)
    assert constant.p == pytest.approx(0.02)  # never 0: no bootstrap shows more than 2 / (resamples + 1)
    strong = two_stage_interval(shifted, np.mean, resamples=99)
    assert strong.p == pytest.approx(0.02)  # every draw above 0
    assert two_stage_interval(centred, hodges_lehmann).side() is None


def test_newcombe_and_mcnemar_on_paired_outcomes():
    first = [True] * 10 + [False] * 10
    second = [True] * 5 + [False] * 15  # the 5 successes of the second are among the first's
    found = newcombe_interval(first, second)
    assert found.value == pytest.approx(0.25) and found.n == 20
    assert 0 < found.low < 0.25 < found.high < 0.5
    assert found.p == pytest.approx(mcnemar_p(5, 0)) == pytest.approx(0.0625)
    same = newcombe_interval(first, first)
    assert same.value == 0 and same.low <= 0 <= same.high and same.p == 1.0
    assert newcombe_interval([True] * 8, [False] * 8).low > 0.5


def test_holm_steps_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03, None, 0.5]) == [0.04, 0.09, 0.09, None, 0.5]
    assert holm([0.2]) == [0.2]


def test_the_frontier_keeps_the_settings_no_other_beats():
    points = [("a", 0.90, 0.5), ("b", 0.80, 0.2), ("c", 0.70, 0.3), ("d", 0.95, 0.9), ("e", 0.90, 0.6)]
    assert frontier(points) == ["b", "a", "d"]  # c is beaten by b, e by a


def test_non_inferiority_uses_the_lower_one_sided_bound():
    ok, lower = non_inferior([0.90, 0.91, 0.92], [0.90, 0.91, 0.92], 0.02)
    assert ok and -0.02 < lower < 0
    assert not non_inferior([0.90, 0.91, 0.92], [0.90, 0.91, 0.92], 0.01)[0]  # three seeds cannot show 1 point
    assert not non_inferior([0.85, 0.86, 0.87], [0.90, 0.91, 0.92], 0.01)[0]
    assert non_inferior([0.895], [0.9], 0.01) == (True, pytest.approx(-0.005))


def test_late_gain_reads_the_last_quarter_of_each_history():
    def run(accuracies):
        return {"history": [{"round": t, "accuracy": a} for t, a in enumerate(accuracies)]}
    rising = run([0.1 + 0.01 * t for t in range(41)])  # 1 point a round to the end
    level = run([0.1] * 20 + [0.4] * 21)  # flat over rounds 30-40
    assert late_gain([rising]) == pytest.approx(0.01)
    assert late_gain([level]) == 0
    assert late_gain([rising, level]) == pytest.approx(0.005)  # the mean over seeds
    assert late_gain([run([0.1, 0.3])]) == pytest.approx(0.2)  # one round: k = 1
    assert late_gain([run([0.1])]) is None and late_gain([{}]) is None


def _row(defense, settings, attacker, seed, image, psnr):
    return {"attack": "dlg", "dataset": "mnist", "scale": "reference", "max_iterations": 10, "attack_options": "{}",
            "model": "lenet", "model_options": "{}", "input_space": "pixels", "model_state": "init", "local_steps": 1,
            "defense": defense, "defense_settings": settings, "attacker": attacker, "seed": seed, "target_id": image,
            "psnr": psnr, "mse": 10 ** (-psnr / 10), "mse_trivial": 0.1, "effective_rate": None, "cpu_seconds": 1.0}


def _accuracy(setting, values):
    return Accuracy("mnist", setting, values, list(range(len(values))), mean_interval(values), "lenet", "reference",
                    100, 5, 0)


def test_the_verdict_of_a_hand_made_sweep():
    """Soteria at 80 % is rebuilt in 4 of 12 runs by its worst-case attacker (the plain one never);
    pruning at 60 % (as accurate) in 12 of 12, pruning at 80 % (less accurate) in none."""
    soteria, p60, p80 = DefenseSetting("soteria", 80), DefenseSetting("prune", 60), DefenseSetting("prune", 80)
    rows = []
    for seed in range(3):
        for image in range(4):
            rows.append(_row("soteria", soteria.to_json(), "plain", seed, image, 5.0))
            rows.append(_row("soteria", soteria.to_json(), "layer-dropping", seed, image, 30.0 if image == 0 else 5.0))
            rows.append(_row("prune", p60.to_json(), "plain", seed, image, 25.0))
            rows.append(_row("prune", p80.to_json(), "plain", seed, image, 8.0))
    accuracies = {("mnist", soteria): _accuracy(soteria, [0.90, 0.91, 0.90]),
                  ("mnist", p60): _accuracy(p60, [0.905, 0.91, 0.90]),
                  ("mnist", p80): _accuracy(p80, [0.80, 0.81, 0.79])}
    plan = Plan(soteria, ("prune",))
    [experiment] = build(rows, accuracies, plan)
    assert experiment.cell(soteria).rebuilt[20.0].value == pytest.approx(1 / 4)  # image 0, every seed
    assert experiment.cell(soteria, "plain").rebuilt[20.0].value == 0
    [comparison] = experiment.comparisons
    assert comparison.baseline == p60 and comparison.eligible  # chosen by accuracy, the strongest as accurate
    assert comparison.rebuilt.value == pytest.approx(0.75) and comparison.verdict() == "Soteria leaks less"
    assert comparison.adjusted_p == comparison.rebuilt.p  # a family of one
    assert comparison.psnr.value == pytest.approx(15.0)  # 25 dB against the trivial floor of 10 dB


def test_psnr_is_clipped_to_the_trivial_guess_and_the_ceiling():
    row = {"psnr": -30.0, "mse_trivial": 0.1}
    assert effective_psnr(row) == pytest.approx(10.0)
    assert effective_psnr({"psnr": math.inf, "mse_trivial": 0.1}) == 60.0
    assert WORST == "worst case"


def test_a_run_is_rebuilt_by_its_own_psnr_never_by_the_trivial_floor():
    """An image whose mean-colour guess already scores 16 dB: a failed run (5 dB) is clipped up to
    the floor for the PSNR medians, but it has rebuilt nothing, at 15 dB or any threshold."""
    setting = DefenseSetting("none", 0.0)
    failed = _row("none", "{}", "plain", 0, 0, 5.0) | {"mse_trivial": 10 ** (-16 / 10)}
    good = _row("none", "{}", "plain", 0, 1, 18.0) | {"mse_trivial": 10 ** (-16 / 10)}
    cell = make_cell(setting, "plain", [failed, good], (15.0, 20.0))
    assert cell.psnr_of((0, 0)) == pytest.approx(16.0)
    assert cell.rebuilt[15.0].value == 0.5 and cell.rebuilt[20.0].value == 0


def test_the_baseline_is_the_strongest_setting_as_accurate_on_average():
    """Chosen by mean accuracy within the margin: three seeds cannot pass the non-inferiority test
    at 1 point, yet a setting as accurate on average is chosen, and a less accurate one is not."""
    soteria, p50, p80 = DefenseSetting("soteria", 80), DefenseSetting("prune", 50), DefenseSetting("prune", 80)
    accuracies = {("mnist", soteria): _accuracy(soteria, [0.903, 0.897, 0.912]),
                  ("mnist", p50): _accuracy(p50, [0.910, 0.890, 0.909]),
                  ("mnist", p80): _accuracy(p80, [0.888, 0.890, 0.863])}
    plan = Plan(soteria, ("prune",))
    assert not non_inferior(accuracies["mnist", p50].values, accuracies["mnist", soteria].values, 0.01)[0]
    assert choose_baseline(plan, "prune", "mnist", [p50, p80], accuracies) == (p50, True)
    far = {**accuracies, ("mnist", p50): _accuracy(p50, [0.85, 0.86, 0.87])}
    assert choose_baseline(plan, "prune", "mnist", [p50, p80], far) == (p80, False)  # none close: the most accurate


def test_the_primary_family_holds_only_the_attacks_the_plan_names():
    soteria, p60 = DefenseSetting("soteria", 80), DefenseSetting("prune", 60)
    rows = []
    for attack in ("dlg", "gs"):
        for seed in range(3):
            for image in range(4):
                rows.append(_row("soteria", soteria.to_json(), "plain", seed, image, 5.0) | {"attack": attack})
                rows.append(_row("prune", p60.to_json(), "plain", seed, image, 25.0) | {"attack": attack})
    accuracies = {("mnist", soteria): _accuracy(soteria, [0.90, 0.91, 0.90]),
                  ("mnist", p60): _accuracy(p60, [0.905, 0.91, 0.90])}
    both = {e.params["attack"]: e for e in build(rows, accuracies, Plan(soteria, ("prune",)))}
    only_dlg = {e.params["attack"]: e for e in build(rows, accuracies, Plan(soteria, ("prune",), ("dlg",)))}
    assert both["dlg"].comparisons[0].rebuilt.level > only_dlg["dlg"].comparisons[0].rebuilt.level  # 2 vs 1
    assert only_dlg["gs"].comparisons[0].adjusted_p is None  # outside the family: not adjusted
    assert only_dlg["dlg"].comparisons[0].adjusted_p == only_dlg["dlg"].comparisons[0].rebuilt.p
    assert Plan.from_table({"soteria": 80, "baselines": ["prune"], "attacks": ["dlg"]}).attacks == ("dlg",)


def test_runs_that_all_agree_are_not_certainty():
    """Every run rebuilt on one side, none on the other: the two-stage bootstrap has nothing to
    resample (a zero-width interval, p at its floor, whatever n). The exact paired interval widens
    it, McNemar's p replaces the floor, and fewer than 3 model seeds resolve nothing."""
    setting, soteria = DefenseSetting("prune", 50), DefenseSetting("soteria", 80)

    def cell(s, psnr, seeds, images):
        return make_cell(s, "plain", [_row(s.defense, s.to_json(), "plain", seed, image, psnr)
                                      for seed in seeds for image in range(images)], (20.0,))

    bootstrap = two_stage_interval({1: [-1.0] * 3, 2: [-1.0] * 3}, np.mean)
    assert (bootstrap.low, bootstrap.high) == (-1.0, -1.0)  # what the envelope is for
    two_seeds = compare(cell(setting, 5.0, (1, 2), 3), cell(soteria, 30.0, (1, 2), 3), 20.0, True, 0.95)
    assert two_seeds.rebuilt.value == -1 and two_seeds.rebuilt.high > -1  # widened by Newcombe
    assert two_seeds.rebuilt.p == pytest.approx(mcnemar_p(0, 6)) == pytest.approx(0.03125)
    assert two_seeds.verdict() == "no difference resolved"  # two seeds cannot show that seeds agree
    three_seeds = compare(cell(setting, 5.0, (0, 1, 2), 10), cell(soteria, 30.0, (0, 1, 2), 10), 20.0, True, 0.95)
    assert three_seeds.verdict() == "Soteria leaks more"  # 30 discordant pairs over every seed
    share = cell(setting, 30.0, (0, 1, 2), 2).rebuilt[20.0]
    assert share.value == 1 and (share.low, share.high) == pytest.approx((wilson(6, 6)[0], 1.0))
    assert envelope(bootstrap, -0.5, -0.2, 0.3).p == 0.3 and envelope(bootstrap, -0.5, -0.2).low == -1.0


class _Spec:
    """The part of a grid's reconstruction spec the design reads."""

    def __init__(self, defense, attacker):
        self.setting, self.attacker, self.defense = defense, attacker, defense

    def params(self):
        return _row(self.setting.defense, self.setting.to_json(), self.attacker, 0, 0, 0.0)


class _Cell:
    def __init__(self, setting, seed):
        self.dataset, self.setting, self.seed = "mnist", setting, seed


class _Grid:
    def __init__(self, specs, cells):
        self.reconstructions, self.fedavg = specs, cells


def test_a_sweep_still_running_is_read_as_unfinished():
    """With the grid's design: a worst case waits for every attacker the grid asks for, a baseline
    is chosen only once each of its settings and Soteria have every training seed, and Holm counts
    the comparisons still missing (p = 1) in the planned family."""
    soteria, p50, p80 = DefenseSetting("soteria", 80), DefenseSetting("prune", 50), DefenseSetting("prune", 80)
    rows = [_row(s.defense, s.to_json(), a, seed, image, psnr) for seed in range(3) for image in range(4)
            for s, a, psnr in ((soteria, "plain", 5.0), (soteria, "mask-aware", 30.0), (p50, "plain", 25.0),
                               (p80, "plain", 8.0))]
    plan = Plan(soteria, ("prune", "dp-gaussian"))
    specs = [_Spec(soteria, a) for a in ("plain", "mask-aware", "layer-dropping")] + [
        _Spec(p, "plain") for p in (p50, p80)]
    cells = [_Cell(s, seed) for s in (soteria, p50, p80) for seed in range(3)]
    design = Design.of(_Grid(specs, cells), plan)
    accuracies = {("mnist", s): _accuracy(s, v) for s, v in
                  ((soteria, [0.90, 0.91, 0.90]), (p50, [0.905, 0.91, 0.90]), (p80, [0.80, 0.81, 0.79]))}
    [waiting] = build(rows, accuracies, plan, design)
    assert waiting.cell(soteria) is None  # layer-dropping has not run: no worst case yet
    assert waiting.cell(soteria, "mask-aware").rebuilt[20.0].value == 1
    [without] = build(rows, accuracies, plan)
    assert without.cell(soteria).rebuilt[20.0].value == 1  # without the design: the attackers present
    rows += [_row("soteria", soteria.to_json(), "layer-dropping", seed, image, 6.0)
             for seed in range(3) for image in range(4)]
    [done] = build(rows, accuracies, plan, design)
    [comparison] = done.comparisons
    assert comparison.baseline == p50 and comparison.adjusted_p == pytest.approx(min(1.0, 2 * comparison.rebuilt.p))
    untrained = {**accuracies, ("mnist", p50): _accuracy(p50, [0.905, 0.91])}  # one seed still training
    assert build(rows, untrained, plan, design)[0].comparisons == []  # pending, not pruning at 80 %
