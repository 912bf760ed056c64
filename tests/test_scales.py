"""The scale table every caller reads, and the notebooks' choice of scale."""
import pytest

from soteria_lib.attacks import ATTACKS
from soteria_lib.scales import SCALES, attack_budget, get_scale, notebook_scale


def test_notebook_scale_defaults_to_teaching(monkeypatch):
    monkeypatch.delenv("SOTERIA_SCALE", raising=False)
    assert notebook_scale() == "teaching"


def test_notebook_scale_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SOTERIA_SCALE", "paper")
    assert notebook_scale() == "paper"


def test_unknown_notebook_scale_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SOTERIA_SCALE", "huge")
    with pytest.raises(ValueError, match="SOTERIA_SCALE='huge'"):
        notebook_scale()


def test_every_scale_budgets_every_attack_and_the_attacks_default_to_teaching():
    for scale in SCALES.values():
        assert set(scale.attacks) == set(ATTACKS)
        assert all(b.iterations >= 1 for b in scale.attacks.values())
    for name, info in ATTACKS.items():
        assert info.config().max_iterations == SCALES["teaching"].attacks[name].iterations
    assert attack_budget("paper", "gs").iterations == 24_000 and attack_budget("paper", "dlg").iterations == 300


def test_the_table_cannot_be_changed_by_a_caller():
    with pytest.raises(TypeError):
        SCALES["teaching"].attacks["gs"].model_options["width"] = 64
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        get_scale("huge")


def test_the_reference_scale_runs_the_models_that_reconstruct(monkeypatch):
    """Measured (results/convergence.md): GS reconstructs on the width-64 ConvNet, not on width 16."""
    assert attack_budget("reference", "gs").model_options["width"] == 64
    assert attack_budget("reference", "dlg").iterations == attack_budget("paper", "dlg").iterations
    monkeypatch.setenv("SOTERIA_SCALE", "reference")  # the notebooks budget teaching and paper only
    with pytest.raises(ValueError, match="choose one of \\['teaching', 'paper'\\]"):
        notebook_scale()


def test_the_introduction_prints_the_library_table():
    """The introduction's table of scales is the library's: change a budget, and this fails until
    the table is printed again (``python -c "from soteria_lib.scales import scale_table; print(scale_table())"``)."""
    from pathlib import Path

    from soteria_lib.scales import scale_table

    intro = (Path(__file__).resolve().parents[1] / "book" / "intro.md").read_text()
    assert scale_table() in intro
    assert "| `reference` |" in scale_table() and "24,000 signed-Adam steps, ConvNet width 64" in scale_table()
