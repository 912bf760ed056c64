"""Where the chapters find the committed results (soteria_lib.book_files); the wheel's copy is
exercised by tests/test_colab.py."""
from pathlib import Path

import pytest

from soteria_lib import book_files
from soteria_lib.book_files import ROOT_VARIABLE, book_file, book_root

REPO = Path(__file__).resolve().parent.parent


def test_a_checkout_reads_its_own_results(monkeypatch):
    monkeypatch.delenv(ROOT_VARIABLE, raising=False)
    assert book_root() == REPO
    assert book_file("experiments", "reference.toml") == REPO / "experiments" / "reference.toml"


def test_the_variable_names_another_copy(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "teaching.csv").write_text("attack\n")
    monkeypatch.setenv(ROOT_VARIABLE, str(tmp_path))
    assert book_file("results", "teaching.csv") == tmp_path / "results" / "teaching.csv"


def test_a_missing_file_is_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_VARIABLE, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"results/reference.csv is not under .*SOTERIA_BOOK_ROOT") as error:
        book_file("results", "reference.csv")
    assert "\n" not in str(error.value)


def test_every_bundled_pattern_matches_a_committed_file():
    # what the wheel carries (setup.py copies these) must exist, or a chapter breaks in Colab
    for pattern in book_files.BUNDLED:
        assert sorted(REPO.glob(pattern)), f"{pattern} matches nothing in the checkout"


def test_the_chapters_read_only_bundled_files():
    bundled = {path for pattern in book_files.BUNDLED for path in REPO.glob(pattern)}
    for name in ("results/reference.csv", "results/teaching.csv", "results/convergence.png",
                 "experiments/reference.toml"):
        assert REPO / name in bundled
    for folder in ("fedavg", "fedavg-reference"):
        runs = list((REPO / "results" / folder).glob("*/metrics.json"))
        assert runs and set(runs) <= bundled
