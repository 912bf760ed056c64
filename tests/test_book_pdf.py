"""The printable PDF (tools/book_pdf.py, printed by tools/book.sh into each edition's site): one
file with every page of the table of contents, in order, each chapter's title and its figures."""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

import pytest
from repo_tools import load_tool

ROOT = Path(__file__).resolve().parents[1]
SITES = {"book": ROOT / "_build" / "html", "student": ROOT / "_build" / "student" / "html"}


book_pdf = load_tool("book_pdf")


def _words(text: str) -> str:
    """Lower-case words only; NFKC undoes the ligatures the PDF's text has ("ﬀ" for "ff")."""
    return " ".join(re.sub(r"[^\w]+", " ", unicodedata.normalize("NFKC", text)).lower().split())


@pytest.fixture(scope="module", params=sorted(SITES))
def pdf(request):
    site = SITES[request.param]
    path = site / book_pdf.PDF_NAME
    if not path.is_file():
        reason = f"no {path}: run `bash tools/book.sh --student`"
        if os.environ.get("SOTERIA_SITE_REQUIRED") == "1":
            pytest.fail(f"{reason} (SOTERIA_SITE_REQUIRED=1)")
        pytest.skip(reason)
    from pypdf import PdfReader
    return site, PdfReader(path)


def _titles(site: Path) -> list[str]:
    """The first heading of every page of the table of contents, as the site shows it."""
    titles = []
    for page in book_pdf.toc_pages():
        html = (site / f"{page}.html").read_text()
        heading = re.search(r"<h1[^>]*>(.*?)</h1>", html, re.S).group(1)
        titles.append(re.sub(r"<[^>]+>", "", heading).replace("&amp;", "&").replace("#", "").strip())
    return titles


def test_the_pdf_has_a_bookmark_and_the_title_of_every_page_in_order(pdf):
    site, reader = pdf
    titles = _titles(site)
    assert [item.title for item in reader.outline] == titles
    text = _words(" ".join(page.extract_text() or "" for page in reader.pages))
    positions = [text.find(_words(title)) for title in titles]
    assert all(position >= 0 for position in positions), [t for t, p in zip(titles, positions) if p < 0]
    assert len(reader.pages) > len(titles)


def test_the_pdf_has_the_figures_of_every_chapter(pdf):
    site, reader = pdf
    images = sum(len(page.images) for page in reader.pages)
    figures = sum(sum("<img" in figure for figure in re.findall(r"<figure\b.*?</figure>", (site / f"{page}.html").read_text(), re.S))
                  for page in book_pdf.toc_pages())
    assert figures >= 9, "every chapter has figures"
    assert images >= figures, f"{images} images in the PDF for {figures} figures on the site"
