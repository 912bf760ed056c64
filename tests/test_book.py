"""What the book's pages promise across chapters (chapter 5's verdict stated once, in one wording)."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERDICT = ("Against the attacks it was evaluated with, Soteria degrades reconstruction; against an "
           "attacker that knows the defense, it does not.")


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    return path.read_text()


def test_the_intro_chapter_5_and_chapter_8_state_the_verdict_in_the_same_words():
    for page in ("book/intro.md", "notebooks/05_baselines_tradeoff.ipynb", "notebooks/08_limits.ipynb"):
        assert VERDICT in " ".join(_text(ROOT / page).split()), page
