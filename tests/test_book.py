"""What the book's pages promise across chapters: chapter 5's verdict computed once from the results
and linked to from elsewhere, and every chapter showing the library's code for the rule it teaches."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABEL = "soteria-verdict"  # the MyST target of chapter 5's verdict section
VERDICT_PAGE = "notebooks/05_baselines_tradeoff.ipynb"
PAGES = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    return path.read_text()


def _flat(path: Path) -> str:
    return " ".join(_text(path).split())


def test_the_verdict_is_computed_once_in_chapter_5_under_its_label():
    """The findings are generated from the results (soteria_lib.sweep.findings) by one cell of chapter
    5's verdict section; no page computes them again or writes one out by hand."""
    from soteria_lib.defenses import DefenseSetting
    from soteria_lib.sweep.findings import findings
    from soteria_lib.sweep.verdict import Plan

    computed = {page.relative_to(ROOT).as_posix(): _text(page).count("render_findings(findings(") for page in PAGES}
    assert {page: n for page, n in computed.items() if n} == {VERDICT_PAGE: 1}, computed
    for title in (f.title for f in findings([], {}, Plan(DefenseSetting("soteria", 80), ("prune",)))):
        written = [page.name for page in PAGES if title in _flat(page)]
        assert not written, f"{title!r} is written out by hand in {written}"
    chapter = _flat(ROOT / VERDICT_PAGE)
    section = chapter.split(f"({LABEL})= ## The verdict", 1)
    assert len(section) == 2, f"chapter 5 should open its verdict section with the target ({LABEL})="
    assert "render_findings(findings(" in section[1].split(" ## ", 1)[0], \
        "the findings belong to the section its label opens"


def test_the_intro_and_chapter_8_link_to_the_verdict_instead_of_repeating_it():
    for page in ("book/intro.md", "notebooks/08_limits.ipynb"):
        assert re.search(r"\{ref\}`[^`<]*<" + LABEL + ">`", _text(ROOT / page)), page


def test_every_chapter_shows_the_code_of_the_rule_it_teaches_from_the_library():
    """A listing read with inspect.getsource (soteria_lib.listing.show_source) cannot drift from
    the code; the chapter also names the module it comes from."""
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        prose = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        shown = re.findall(r"show_source\((\w+)", code)
        assert shown, f"{notebook.name} shows no function of the library with show_source"
        assert re.search(r"`soteria_lib\.\w+", prose), f"{notebook.name} never names a module of soteria_lib"


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
