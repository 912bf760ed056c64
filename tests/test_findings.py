"""The verdict's findings in words (issue 26: "the same sentences everywhere, generated from the
results"), on a hand-made sweep whose answers are known: the numbers in each sentence are the
cells', the direction follows the data, and an incomplete grid marks every finding provisional."""
import pytest

from soteria_lib.defenses import DefenseSetting
from soteria_lib.sweep.findings import Progress, findings, progress, render
from soteria_lib.sweep.grid import load_grid
from soteria_lib.sweep.verdict import POST_HOC, Design, Plan, VerdictError, build
from test_inference import _accuracy, _row

NONE, SOTERIA, PRUNE, NOISE = (DefenseSetting("none", 0.0), DefenseSetting("soteria", 80),
                               DefenseSetting("prune", 60), DefenseSetting("dp-gaussian", 0.01))


def _sweep_rows(knowing_psnr: float) -> list[dict]:
    """3 seeds x 4 images: plain DLG rebuilds every undefended image and none under Soteria; the
    layer-dropping attacker reaches ``knowing_psnr`` on images 0 and 1 under Soteria (6.5 dB on the
    others); pruning at 60 % is rebuilt everywhere by the mask-aware attacker; noise by nobody. Half
    the images of every seed: the two-stage interval resolves a difference of half the runs."""
    rows = []
    for seed in range(3):
        for image in range(4):
            rows += [_row("none", "{}", "plain", seed, image, 40.0),
                     _row("soteria", SOTERIA.to_json(), "plain", seed, image, 6.0),
                     _row("soteria", SOTERIA.to_json(), "layer-dropping", seed, image,
                          knowing_psnr if image < 2 else 6.5),
                     _row("prune", PRUNE.to_json(), "plain", seed, image, 7.0),
                     _row("prune", PRUNE.to_json(), "mask-aware", seed, image, 35.0),
                     _row("dp-gaussian", NOISE.to_json(), "plain", seed, image, 8.0),
                     _row("dp-gaussian", NOISE.to_json(), "noise-aware", seed, image, 9.0)]
    return rows


def _sweep(knowing_psnr: float):
    accuracies = {("mnist", s): _accuracy(s, v) for s, v in
                  ((NONE, [0.91, 0.90, 0.92]), (SOTERIA, [0.905, 0.90, 0.91]), (PRUNE, [0.90, 0.91, 0.90]),
                   (NOISE, [0.90, 0.90, 0.91]))}
    plan = Plan(SOTERIA, ("prune", "dp-gaussian"))
    return build(_sweep_rows(knowing_psnr), accuracies, plan), accuracies, plan


def _by_key(found):
    return {f.key: f for f in found}


def test_each_finding_carries_the_cells_numbers_and_the_direction_they_show():
    experiments, accuracies, plan = _sweep(knowing_psnr=30.0)
    found = _by_key(findings(experiments, accuracies, plan))
    # every run agrees, so the two-stage bootstrap is degenerate: Wilson's interval widens it
    assert found["paper-attacker"].items == ("MNIST: 100 [76, 100] % (12/12) with no defense, "
                                             "0 [0, 24] % (0/12) against Soteria 80 %",)
    [knowing] = found["knowing-attacker"].items
    assert knowing.startswith("MNIST: 50 [") and "(6/12) against Soteria 80 % (each attacker that knows it: " \
        "layer-dropping 6/12)" in knowing
    assert "no defense minus Soteria +50 [" in knowing and knowing.endswith("points on 12 paired runs, resolved")
    primary = dict(item.split(": ", 1) for item in found["primary"].items)
    assert primary["MNIST, gradient pruning 60 %"].endswith("**Soteria leaks less**")  # 12/12 against 6/12
    assert primary["MNIST, Gaussian noise σ = 0.01"].endswith("**Soteria leaks more**")  # 0/12 against 6/12
    assert found["noise"].items == ("MNIST, Gaussian noise σ = 0.01: 0 [0, 24] % (0/12) "
                                    "(each attacker that knows it: noise-aware 0/12)",)
    assert "evidence of privacy only as far as these attackers are strong" in found["noise"].coda  # said so


def test_an_attacker_added_after_the_plan_enters_only_the_sensitivity_analysis():
    """The plan fixes the worst case's attackers; one the grid adds later (here a stronger attacker
    against noise rebuilding half of the runs) is reported beside it, never inside it."""
    _, accuracies, plan = _sweep(knowing_psnr=30.0)
    planned = Plan(SOTERIA, ("prune", "dp-gaussian"), attackers=("plain", "mask-aware", "layer-dropping", "noise-aware"))
    extra = [_row("dp-gaussian", NOISE.to_json(), "image-prior", seed, image, 30.0 if image < 2 else 8.0)
             for seed in range(3) for image in range(4)]
    [experiment] = build(_sweep_rows(30.0) + extra, accuracies, planned)
    assert experiment.cell(NOISE).rebuilt[20.0].value == 0  # the planned worst case: noise-aware alone
    assert experiment.cell(NOISE, POST_HOC).rebuilt[20.0].value == 0.5  # with the added attacker
    [item] = _by_key(findings([experiment], accuracies, planned))["noise"].items
    assert item.startswith("MNIST, Gaussian noise σ = 0.01: 0 [0, 24] % (0/12) (each attacker that knows it: "
                           "image-prior 6/12, noise-aware 0/12); counting the image-prior attacker added during the "
                           "sweep too, the sensitivity analysis: 50 [")
    [unplanned] = build(_sweep_rows(30.0) + extra, accuracies, plan)  # no attackers fixed: all of them count
    assert unplanned.cell(NOISE).rebuilt[20.0].value == 0.5 and unplanned.cell(NOISE, POST_HOC) is None


def test_a_plan_names_only_the_batterys_attackers():
    with pytest.raises(VerdictError, match="unknown attacker 'oracle'"):
        Plan.from_table({"soteria": 80, "baselines": ["prune"], "attackers": ["plain", "oracle"]})


def test_the_words_follow_the_numbers_when_the_knowing_attacker_fails():
    experiments, accuracies, plan = _sweep(knowing_psnr=6.0)
    found = _by_key(findings(experiments, accuracies, plan))
    primary = dict(item.split(": ", 1) for item in found["primary"].items)
    assert primary["MNIST, Gaussian noise σ = 0.01"].endswith("**no difference resolved**")  # 0/12 against 0/12
    assert found["knowing-attacker"].items[0].endswith("+100 [+66, +100] points on 12 paired runs, resolved")


def test_accuracy_finding_states_the_non_inferiority_test_not_the_means():
    experiments, accuracies, plan = _sweep(knowing_psnr=30.0)
    [item] = _by_key(findings(experiments, accuracies, plan))["accuracy"].items
    assert item.startswith("MNIST: Soteria 80 % 90.5") and "non-inferior at a 1-point margin: " in item
    close = {**accuracies, ("mnist", NONE): _accuracy(NONE, [0.95, 0.96, 0.97])}
    [item] = _by_key(findings(experiments, close, plan))["accuracy"].items
    assert "non-inferior at a 1-point margin: not shown" in item  # Soteria is 5 points below


def test_an_incomplete_grid_marks_every_finding_provisional(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('scale = "teaching"\nimages = [0, 1]\nseeds = [0]\n[defenses]\nnone = true\n'
                    '[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = 2\n')
    loaded = load_grid(grid)
    [one, _] = [spec.params() for spec in loaded.reconstructions]
    state = progress(loaded, [one], {})
    assert (state.runs, state.runs_asked, state.fedavg_asked) == (1, 2, 0) and not state.complete
    assert "is provisional" in render([], state)[0]
    assert Progress(2, 2, 0, 0).complete and "provisional" not in Progress(2, 2, 0, 0).text()


def test_rendering_gives_every_finding_its_title_and_a_bullet_per_item():
    experiments, accuracies, plan = _sweep(knowing_psnr=30.0)
    text = "\n".join(render(findings(experiments, accuracies, plan)))
    assert text.count("**The attackers that know Soteria.**") == 1
    assert "* MNIST, gradient pruning 60 %:" in text
    assert "* no runs yet" in text  # the exploratory finding: nothing outside the primary protocol ran


@pytest.mark.parametrize("missing, said", [("soteria", "Soteria 80 %"), ("none", "no defense")])
def test_a_dataset_without_its_fedavg_cells_says_which(missing, said):
    experiments, accuracies, plan = _sweep(knowing_psnr=30.0)
    left = {k: a for k, a in accuracies.items() if k[1].defense != missing}
    [item] = _by_key(findings(experiments, left, plan))["accuracy"].items
    assert item == f"MNIST: {said} not trained yet"


def test_a_baseline_off_the_margin_or_not_yet_chosen_is_said_to_be():
    """The rule falls back to the most accurate setting when none is within the margin: the finding
    says that this is no comparison at matched accuracy. A baseline without accuracies is pending."""
    experiments, accuracies, plan = _sweep(knowing_psnr=30.0)
    poorer = {**accuracies, ("mnist", NOISE): _accuracy(NOISE, [0.80, 0.81, 0.79])}
    rebuilt = build([r for e in experiments for c in e.cells.values() if c.attacker != "worst case"
                     for r in c.by_run.values()], poorer, plan)
    primary = dict(item.split(": ", 1) for item in _by_key(findings(rebuilt, poorer, plan))["primary"].items)
    assert primary["MNIST, Gaussian noise σ = 0.01"].endswith("not a comparison at matched accuracy: no setting of "
                                                             "this baseline is within the margin, so the rule took "
                                                             "its most accurate one, which is less accurate than "
                                                             "Soteria")
    assert primary["MNIST, gradient pruning 60 %"].endswith("**Soteria leaks less**")
    untrained = {k: a for k, a in accuracies.items() if k[1].defense != "prune"}
    items = _by_key(findings(build([r for e in experiments for c in e.cells.values() if c.attacker != "worst case"
                                    for r in c.by_run.values()], untrained, plan), untrained, plan))["primary"].items
    assert "MNIST, gradient pruning: pending (the runs or the FedAvg accuracies that choose its setting are not " \
           "all in)" in items


def test_an_experiment_of_the_grid_without_runs_is_named(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('scale = "teaching"\nimages = [0]\nseeds = [0]\n[defenses]\nnone = true\n'
                    '[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = 2\nlocal_steps = [1, 5]\n')
    experiments, accuracies, plan = _sweep(knowing_psnr=30.0)
    items = _by_key(findings(experiments, accuracies, plan, Design.of(load_grid(grid), plan)))["exploratory"].items
    assert items == ("DLG on MNIST, initial model, 5 local steps: not run yet",)


def test_the_committed_summary_reads_the_committed_rows():
    """``results/verdict_summary.md`` is rewritten whenever rows are committed: its count of the grid's
    runs is what ``results/verdict.csv`` and ``results/fedavg-verdict`` hold (integers, the same on
    any machine), so the results appendix never shows tables older than the rows."""
    import json
    from pathlib import Path

    from soteria_lib.sweep.accuracy import read_accuracies
    from soteria_lib.sweep.results import RESULTS, read_rows

    root = Path(__file__).resolve().parents[1]
    csv = root / "results" / "verdict.csv"
    state = progress(load_grid(root / "experiments" / "verdict.toml"), RESULTS.unique_rows(read_rows(csv), csv),
                     read_accuracies(root / "results" / "fedavg-verdict"))
    assert json.loads((root / "results" / "verdict_summary.json").read_text())["progress"] == vars(state)
    assert state.text() in (root / "results" / "verdict_summary.md").read_text()


@pytest.mark.parametrize("rounds, counted", [(5, 1), (4, 0)])
def test_a_fedavg_cell_counts_only_when_trained_for_the_grids_rounds(tmp_path, rounds, counted):
    """A leftover metrics file of a shorter training (CIFAR-10 once ran 10 rounds, now 40) is not
    progress."""
    grid = tmp_path / "g.toml"
    grid.write_text('scale = "teaching"\nimages = [0]\nseeds = [0]\n[defenses]\nnone = true\n'
                    '[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = 2\n'
                    f'[fedavg]\ndatasets = ["mnist"]\noutput = "{tmp_path}"\noptions = {{rounds = {rounds}}}\n')
    state = progress(load_grid(grid), [], {("mnist", NONE): _accuracy(NONE, [0.5])})  # trained 5 rounds
    assert (state.fedavg, state.fedavg_asked) == (counted, 1)


def test_the_accuracy_cost_waits_for_every_training_seed(tmp_path):
    """One of three Soteria seeds trained: its accuracy is shown as such and no test is run on it."""
    grid = tmp_path / "g.toml"
    grid.write_text('scale = "teaching"\nimages = [0]\nseeds = [0]\n[defenses]\nnone = true\nsoteria = [80]\n'
                    '[attacks.dlg]\ndatasets = ["mnist"]\nmax_iterations = 2\n'
                    f'[fedavg]\ndatasets = ["mnist"]\nseeds = [0, 1, 2]\noutput = "{tmp_path}"\n')
    experiments, accuracies, plan = _sweep(knowing_psnr=30.0)
    partial = {**accuracies, ("mnist", SOTERIA): _accuracy(SOTERIA, [0.905])}
    [item] = _by_key(findings(experiments, partial, plan, Design.of(load_grid(grid), plan)))["accuracy"].items
    assert item.endswith("after 1 of 3 training seeds, against 91 [88.5, 93.5] % with no defense; the "
                         "non-inferiority test waits for every seed") and item.startswith("MNIST: Soteria 80 % 90.5")
