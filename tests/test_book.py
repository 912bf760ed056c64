"""What the book's pages promise across chapters (chapter 5's verdict stated once, in one wording)."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERDICT = ("Against the attacks it was evaluated with, Soteria degrades reconstruction; against an "
           "attacker that knows the defense, it does not.")
# what the reference sweep measured behind it (chapter 5 checks it on the committed results)
FINDING = ("In the reference sweep, the attacker battery rebuilds the image against the strongest Soteria setting "
           "that matches a baseline's accuracy about as often as the plain attacker rebuilds it with no defense, "
           "for DLG and GS on MNIST and CIFAR-10.")


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    return path.read_text()


def test_the_intro_chapter_5_and_chapter_8_state_the_verdict_in_the_same_words():
    for page in ("book/intro.md", "notebooks/05_baselines_tradeoff.ipynb", "notebooks/08_limits.ipynb"):
        assert VERDICT in " ".join(_text(ROOT / page).split()), page
        assert FINDING in " ".join(_text(ROOT / page).split()), page


def test_every_file_of_the_project_that_a_page_names_exists():
    """A page pointing at a test, benchmark, tool or module that is not there is a dead pointer."""
    import re

    pages = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md")) + [ROOT / "README.md"]
    named = {(page.name, path) for page in pages
             for path in re.findall(r"\b((?:tests|bench|tools|soteria_lib|binder)/[\w/.-]*\w\.(?:py|sh|txt))\b",
                                    _text(page))}
    assert named, "the pattern should find the files the pages name"
    missing = sorted((page, path) for page, path in named if not (ROOT / path).is_file())
    assert not missing, missing
