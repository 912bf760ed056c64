import pytest

from soteria_lib.experiment import notebook_scale


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
