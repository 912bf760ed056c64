"""The terms of reuse and the citation: code under MIT, text and figures under CC BY 4.0, stated in
the licence files, the package metadata, the wheel, every page's footer and CITATION.cff, which
cites the book and the Soteria paper as book/references.bib does."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CITATION = yaml.safe_load((ROOT / "CITATION.cff").read_text())
LICENCES = {"LICENSE": "MIT", "LICENSE-TEXT": "CC-BY-4.0"}


def test_the_licence_files_hold_the_mit_and_cc_by_4_texts():
    mit, cc = (ROOT / "LICENSE").read_text(), (ROOT / "LICENSE-TEXT").read_text()
    assert mit.startswith("MIT License") and "Permission is hereby granted, free of charge" in mit
    assert "soteria-book contributors" in mit
    assert cc.startswith("Creative Commons Attribution 4.0 International")
    assert "Section 3 – License Conditions" in cc and "Attribution" in cc


def test_pyproject_declares_both_licences_and_ships_both_files():
    assert PYPROJECT["license"] == " AND ".join(LICENCES.values())
    assert PYPROJECT["license-files"] == list(LICENCES)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requires == ["setuptools>=77"], "PEP 639 licence metadata needs setuptools 77"


def test_the_wheel_carries_the_licence_files_and_expression(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", *LICENCES, "soteria_lib"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "wheels"), str(source)], check=True, timeout=300)
    wheel = next((tmp_path / "wheels").glob("soteria_lib-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        for name in LICENCES:
            assert archive.read(f"{info}/licenses/{name}") == (ROOT / name).read_bytes()
    assert f"License-Expression: {PYPROJECT['license']}" in metadata
    assert all(f"License-File: {name}" in metadata for name in LICENCES)


def test_citation_cff_has_the_required_keys_and_agrees_with_the_package():
    for key in ("cff-version", "message", "title", "authors"):
        assert CITATION.get(key), f"CITATION.cff lacks {key}"
    assert CITATION["cff-version"] == "1.2.0"
    assert all("name" in a or "family-names" in a for a in CITATION["authors"])
    assert str(CITATION["version"]) == PYPROJECT["version"]
    assert CITATION["license"] == list(LICENCES.values())
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert CITATION["repository-code"] == config["repository"]["url"].rstrip("/")


def _bib_entry(key: str) -> dict[str, str]:
    bib = (ROOT / "book" / "references.bib").read_text()
    body = bib[bib.index(f"{{{key},"):]
    body = body[:body.index("\n}")]
    return {name: " ".join(value.split()) for name, value in re.findall(r"(\w+)\s*=\s*\{(.*?)\},?\n", body + "\n")}


def test_citation_cff_cites_the_soteria_paper_as_the_bibliography_does():
    paper = _bib_entry("sun2021soteria")
    reference = next(r for r in CITATION["references"] if "Soteria" in r["title"])
    assert reference["title"] == paper["title"]
    assert reference["doi"] == paper["doi"] and str(reference["year"]) == paper["year"]
    assert f"{reference['start']}--{reference['end']}" == paper["pages"]
    authors = [f"{a['family-names']}, {a['given-names']}" for a in reference["authors"]]
    assert authors == paper["author"].split(" and ")


def test_the_intro_says_how_to_cite_the_book_and_the_paper():
    intro = (ROOT / "book" / "intro.md").read_text()
    section = intro[intro.index("## How to cite"):]
    assert "CITATION.cff" in section and "{cite}`sun2021soteria`" in section
    assert "CC BY 4.0" in section and "MIT" in section


def test_every_page_of_the_built_book_has_the_licence_footer():
    site = ROOT / "_build" / "html"
    pages = sorted(site.glob("book/*.html")) + sorted(site.glob("notebooks/*.html"))
    if not pages:
        pytest.skip("no built site: run `bash tools/book.sh`")
    for page in pages:
        footer = page.read_text()
        assert 'class="soteria-licence"' in footer and "CC BY 4.0" in footer and "MIT" in footer, page
        assert 'href="../soteria-book.pdf"' in footer, f"{page}: the PDF link is not relative to the page"
