"""The printable PDF of the book: every page of the built site, in the order of ``_toc.yml``,
printed by the local Chromium and merged into one file with a bookmark per page.

    .venv/bin/python tools/book_pdf.py _build/html     # writes _build/html/soteria-book.pdf
    (tools/book.sh runs it after each build, for the book and for its student edition)

Chromium is Debian's ``/usr/bin/chromium``, driven by the pinned Playwright package (no browser is
downloaded); the site is served on 127.0.0.1 and nothing leaves the machine. Each page is printed
as a reader sees it once MathJax and the widgets have rendered (a slider prints the frame it
shows), with the solutions of the exercises opened; the student edition has none to open.
pypdf merges the pages.

Also a Sphinx extension (listed in ``_config.yml``): the footer of every page (``html:
extra_footer``) links ``soteria-book.pdf``; :func:`_link_pdf` makes that link relative to each
page, so it reaches the PDF at the site's root from every folder.
"""
from __future__ import annotations

import functools
import http.server
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

PDF_NAME = "soteria-book.pdf"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent
# Open every collapsed solution (sphinx-togglebutton hides them with this class) and drop the
# toggle buttons, which mean nothing on paper.
OPEN_SOLUTIONS = """() => {
    document.querySelectorAll('.admonition.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
    document.querySelectorAll('button.toggle-button').forEach(e => e.remove());
}"""


def toc_pages(toc: Path = ROOT / "_toc.yml") -> list[str]:
    """Every document of the table of contents, root first, without suffix."""
    import yaml

    def walk(node):
        if isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    yield str(node[key]).removesuffix(".md").removesuffix(".ipynb")
            for value in node.values():
                yield from walk(value)
    return list(dict.fromkeys(walk(yaml.safe_load(toc.read_text()))))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@contextmanager
def served(site: Path):
    """``site`` served on 127.0.0.1 at a free port; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _print_page(browser, url: str, target: Path) -> str:
    """Print one page to ``target``; returns its title (the first heading)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        response = page.goto(url, wait_until="load")
        if response is None or not response.ok:
            raise FileNotFoundError(f"{url}: {response.status if response else 'no response'}: is the site "
                                    "older than _toc.yml?")
        page.wait_for_load_state("networkidle")
        page.evaluate("() => window.MathJax ? window.MathJax.startup.promise.then(() => true) : true")
        views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
        if views:
            page.wait_for_function(f"document.querySelectorAll('.widget-subarea').length >= {views}")
        page.evaluate(OPEN_SOLUTIONS)
        page.emulate_media(media="print")
        page.pdf(path=str(target), format="A4", print_background=True,
                 margin={"top": "15mm", "bottom": "15mm", "left": "12mm", "right": "12mm"})
        return page.locator("h1").first.inner_text().strip().rstrip("#").strip()
    finally:
        page.close()


def print_book(site: Path, pages: list[str], output: Path) -> Path:
    """Print ``pages`` (toc paths) of the built ``site`` into one PDF at ``output``."""
    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    with tempfile.TemporaryDirectory() as scratch, served(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for i, path in enumerate(pages):
                part = Path(scratch) / f"{i:03d}.pdf"
                title = _print_page(browser, f"{base}/{path}.html", part)
                start = len(writer.pages)
                writer.append(PdfReader(part))
                writer.add_outline_item(title=title, page_number=start)
        finally:
            browser.close()
    writer.add_metadata({"/Title": "Soteria: defending federated learning against gradient inversion",
                         "/Subject": "Text and figures CC BY 4.0, code MIT (soteria-book contributors)"})
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as handle:
        writer.write(handle)
    return output


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: tools/book_pdf.py SITE  (a built site, e.g. _build/html)", file=sys.stderr)
        return 2
    site = Path(argv[0])
    if not (site / "index.html").is_file():
        print(f"book_pdf.py: no built site at {site}: run `bash tools/book.sh` first", file=sys.stderr)
        return 2
    if not CHROMIUM.is_file():
        print(f"book_pdf.py: {CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium",
              file=sys.stderr)
        return 2
    print(print_book(site, toc_pages(), site / PDF_NAME))
    return 0


# --- Sphinx extension -------------------------------------------------------------------------

def _link_pdf(app, pagename, templatename, context, doctree):
    footer = context.get("theme_extra_footer") or ""
    context["theme_extra_footer"] = footer.replace(f'href="{PDF_NAME}"', f'href="{context["pathto"](PDF_NAME, 1)}"')


def setup(app):
    app.connect("html-page-context", _link_pdf)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
