"""The built book in a real browser: every page of the table of contents, as a reader gets it.

Serves ``_build/html`` (built by ``bash tools/book.sh``) on 127.0.0.1 and opens each page of
``_toc.yml`` in Debian's Chromium (``/usr/bin/chromium``), driven headless by Playwright; no
browser is ever downloaded (``playwright install`` is not needed). Every page must have

* a title (``<title>`` and a non-empty ``<h1>``);
* no error output: a cell's traceback (``.output.traceback``; also ``.output.error``) or its
  stderr (``.output.stderr``). The build already fails on a raising cell; stderr is counted
  too because in a textbook a warning box is something the reader trips over. A notebook that
  means to show stderr can tag the cell ``remove-stderr`` or redirect it;
* no source shown as text: a Markdown table, a MyST role or directive, TeX outside MathJax;
* no MathJax error (``mjx-merror``: an unknown macro or malformed TeX), no display equation
  cut off on the left, and none wider than the text column at 1280 px (long ones are broken
  over lines; on a phone the few that still do not fit scroll, with a visible cue);
* no JavaScript error (uncaught page errors and ``console.error``), apart from the entries of
  ``HARMLESS_CONSOLE_ERRORS``;
* every output image a numbered figure with a caption and a described alt text;
* no widget that failed to render, and no request to any host but 127.0.0.1 (``data:`` and
  ``blob:`` URLs stay inside the page; the widget images are ``blob:`` URLs);

and pages with sliders (chapters 04 and 05 must have one) must react to the keyboard: focusing
a frame slider's handle and pressing ArrowRight shows a different frame, ArrowLeft the first
one again; every chapter's exercises have solutions that stay hidden until clicked open; and at
390 px (a phone) no page is wider than the screen, no output image is drawn below
``LEGIBLE_SCALE`` of its natural size (its text stays legible) nor wider than the text column (the
figures are drawn narrow enough for both), no display equation is cut without a visible scroll cue,
and chapter 5's verdict table fits its column. Full-page screenshots of every page at 1280
and 390 px go to ``_build/screenshots/``.

Every test runs on both editions of the book: ``_build/html`` and the student edition
``_build/student/html`` (``bash tools/book.sh --student``, tools/student_edition.py), where no
solution may be present and every exercise of the book must be.

Without a built site or without Chromium these tests skip, saying why; with
``SOTERIA_SITE_REQUIRED=1`` (set by ``.ci/run``, which builds both editions) they fail instead.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from repo_tools import load_tool

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "_build" / "html"
SITES = {"book": SITE, "student": REPO / "_build" / "student" / "html"}  # the two editions
SCREENSHOTS = REPO / "_build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = "SOTERIA_SITE_REQUIRED"
# Flags for a quiet, offline headless Chromium; without the background-networking ones it
# contacts Google hosts on start. Playwright gives every launch a fresh temporary profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# console.error messages that are not the site's fault, as (substring, reason). None so far.
HARMLESS_CONSOLE_ERRORS: list[tuple[str, str]] = []
# The page that states the verdict, and the findings its section generates (soteria_lib.sweep.findings
# .render: a bold title per threat model, a bullet per dataset or comparison): they must be there and
# readable at a phone's width without scrolling sideways.
VERDICT_PAGE = "notebooks/05_baselines_tradeoff"
VERDICT_FINDINGS = "section:has(> #soteria-verdict) .cell_output"  # the outputs of the section the label opens
# Pages (toc paths, by prefix) that must carry at least one frame slider.
SLIDER_PAGES = ("notebooks/04_", "notebooks/05_")
FRAME_SLIDER = ".soteria-frame-slider"  # soteria_lib.widgets.FRAME_SLIDER_CLASS
ERROR_OUTPUTS = ".output.traceback, .output.error, .output.stderr"
toc_pages = load_tool("book_pdf").toc_pages


def _unavailable(reason: str):
    if os.environ.get(REQUIRED) == "1":
        pytest.fail(f"{reason} ({REQUIRED}=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module", params=sorted(SITES))
def site(request) -> tuple[str, Path]:
    """The name and folder of one built edition of the book."""
    folder = SITES[request.param]
    if not (folder / "index.html").is_file():
        _unavailable(f"no built {request.param} site at {folder}: run `bash tools/book.sh --student` first")
    return request.param, folder


@pytest.fixture(scope="module")
def site_url(site):
    """The built site served on 127.0.0.1 at a free port, for the duration of the module."""
    handler = functools.partial(_QuietHandler, directory=str(site[1]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing: bash tools/setup_env.sh installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageLog:
    """What a page did while loading: every request URL, page errors, console errors."""

    def __init__(self, context, page):
        self.requests, self.errors = [], []
        context.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)

    def _console(self, message):
        if message.type == "error" and not any(s in message.text for s, _ in HARMLESS_CONSOLE_ERRORS):
            self.errors.append(f"console.error: {message.text} ({message.location.get('url')})")

    def check(self) -> None:
        """Fail on any JavaScript error or request to another host seen so far."""
        foreign = [url for url in self.requests
                   if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != "127.0.0.1"]
        problems = self.errors + [f"request leaving 127.0.0.1: {url}" for url in foreign]
        assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page_path", toc_pages())
def test_page(page_path, site, site_url, browser):
    edition, folder = site
    html = folder / f"{page_path}.html"
    shots = SCREENSHOTS / edition
    assert html.is_file(), f"{html} is missing: is the site older than _toc.yml? run bash tools/book.sh"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log = PageLog(context, page)
    try:
        page.goto(f"{site_url}/{page_path}.html", wait_until="load")
        page.wait_for_load_state("networkidle")
        _wait_for_mathjax(page)
        _wait_for_widgets(page)
        shots.mkdir(parents=True, exist_ok=True)  # as loaded, before the sliders move
        page.screenshot(path=str(shots / f"{page_path.replace('/', '__')}.png"), full_page=True)
        log.check()

        assert page.title().strip(), "the page has no <title>"
        assert page.locator("h1").first.inner_text().strip(), "the page has no <h1> heading"
        errors = page.locator(ERROR_OUTPUTS)
        assert errors.count() == 0, f"error output cells:\n{errors.first.inner_text()[:2000]}"
        assert page.locator("mjx-merror").count() == 0, \
            f"MathJax errors: {page.locator('mjx-merror').all_inner_texts()}"
        assert not page.evaluate(_CLIPPED_EQUATIONS), "display equations cut off on the left"
        overflowing = page.evaluate(_OVERFLOWING_EQUATIONS)
        assert not overflowing, f"display equations wider than the text column at 1280 px: {overflowing}"
        assert "Error displaying widget" not in page.locator("body").inner_text()
        raw = page.evaluate(_RAW_MARKUP)
        assert not raw, f"Markdown or MyST shown as text instead of rendered: {raw}"
        unlabelled = page.evaluate(_UNLABELLED_IMAGES)
        assert not unlabelled, f"output images that are not numbered figures with a described alt text: {unlabelled}"

        frame_sliders = page.locator(FRAME_SLIDER)
        sliders, in_frame_sliders = page.locator(".widget-slider"), frame_sliders.locator(".widget-slider")
        assert sliders.count() == in_frame_sliders.count(), "a slider that is not a frame slider " \
            "does nothing on the static site (use soteria_lib.widgets.frame_slider)"
        if page_path.startswith(SLIDER_PAGES):
            assert frame_sliders.count() > 0, f"{page_path} should have a pruning-rate frame slider"
        for i in range(frame_sliders.count()):
            _check_arrow_keys(page, frame_sliders.nth(i))
        if edition == "student":
            _check_no_solutions(page, page_path)
        else:
            _check_solutions(page, page_path)
        page.wait_for_load_state("networkidle")
        log.check()

        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"{page_path.replace('/', '__')}__390.png"), full_page=True)
        small = page.evaluate(_SHRUNKEN_IMAGES, LEGIBLE_SCALE)
        assert not small, f"output images drawn below {LEGIBLE_SCALE:.0%} of their size at 390 px: {small}"
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 391, f"at 390 px the page is {width} px wide: something does not wrap or scroll"
        hidden = page.evaluate(_CUT_WITHOUT_CUE)
        assert not hidden, f"display equations cut at 390 px with no visible scroll cue: {hidden}"
        wide = page.evaluate(_WIDE_FIGURES)
        assert not wide, f"figures wider than the text column at 390 px (their key panel may be off-screen): {wide}"
        if page_path == VERDICT_PAGE:
            findings = page.locator(VERDICT_FINDINGS)
            assert findings.locator("li").count() >= 5, f"{VERDICT_PAGE}'s verdict section shows no findings"
            assert findings.locator("strong").count() >= 5, f"{VERDICT_PAGE}'s findings lost their titles"
            sideways = findings.evaluate_all("outs => Math.max(...outs.map(o => o.scrollWidth - o.clientWidth))")
            assert sideways <= 1, f"at 390 px the verdict's findings are {sideways} px wider than their column"
    finally:
        context.close()


def _check_solutions(page, page_path: str) -> None:
    """Every chapter's exercises have solutions, hidden until the reader opens them."""
    solutions = page.locator(".solution.dropdown")
    if page_path.startswith("notebooks/"):
        assert solutions.count() >= 3, "the chapter's exercises should have collapsible solutions"
    for i in range(solutions.count()):
        content = solutions.nth(i).locator("section").first
        assert not content.is_visible(), "a solution is shown before the reader opens it"
        solutions.nth(i).locator(".admonition-title").click()
        content.wait_for(state="visible", timeout=5000)


def _check_no_solutions(page, page_path: str) -> None:
    """The student edition has every exercise of the book, and none of their solutions."""
    assert page.locator(".solution").count() == 0, "a solution in the student edition"
    assert "Solution to" not in page.locator("body").inner_text()
    book_page = SITE / f"{page_path}.html"
    exercises = book_page.read_text().count('class="exercise admonition"') if book_page.is_file() else None
    if exercises is None:
        assert not page_path.startswith("notebooks/") or page.locator(".exercise").count() >= 3
    else:
        assert page.locator(".exercise").count() == exercises, "the student edition lost an exercise"


def _wait_for_widgets(page) -> None:
    """Let the widget manager render every saved widget view (into a div.widget-subarea)."""
    views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    if views:
        state = page.locator('script[type="application/vnd.jupyter.widget-state+json"]')
        assert state.count() == 1, "widget views but no saved widget state: the executed notebook lost it"
        page.wait_for_function(f"document.querySelectorAll('.widget-subarea').length >= {views}")


def _wait_for_mathjax(page) -> None:
    """Let MathJax finish typesetting, if the page loads it."""
    page.wait_for_function("() => !window.MathJax || (window.MathJax.startup && window.MathJax.startup.promise)")
    page.evaluate("() => window.MathJax ? window.MathJax.startup.promise.then(() => true) : true")


# Display equations that start left of their box, where no scroll bar reaches.
_CLIPPED_EQUATIONS = """() => [...document.querySelectorAll('mjx-container[display="true"]')].filter(
    eq => eq.getBoundingClientRect().left < eq.parentElement.getBoundingClientRect().left - 1).length"""
# Paragraphs and list items that show source instead of its rendering: a Markdown table (a
# line of "| a | b |"), a MyST role or directive, or TeX delimiters outside MathJax.
_RAW_MARKUP = r"""() => [...document.querySelectorAll('.bd-article p, .bd-article li')].filter(el => {
    const text = el.textContent;
    return /^\s*\|.*\|\s*$/m.test(text) || /\{(eq|numref|doc|cite|ref)\}`/.test(text) || /```\{/.test(text)
        || /(^|[^\\])\$\$/.test(text) || /\\(frac|tfrac|varepsilon|eta|mu)\b/.test(text);
}).map(el => el.textContent.slice(0, 80))"""
# Output images (outside widgets) that are not in a numbered figure, or whose alt text is empty or
# a file name (MyST-NB's default is the image's hash).
_UNLABELLED_IMAGES = """() => [...document.querySelectorAll('.cell_output img')].filter(img =>
    !img.closest('.jupyter-widgets, .widget-subarea') && (!img.closest('figure')
        || !img.alt || /^[0-9a-f]{16,}/.test(img.alt) || /\\.(png|svg|jpe?g)$/.test(img.alt))
).map(img => img.alt || img.src.slice(-40))"""
LEGIBLE_SCALE = load_tool("site_scripts").LEGIBLE_SCALE
# Visible output images (figures and slider frames) drawn below the given fraction of their
# natural width: their text would shrink below legibility (tools/site_scripts.py).
_SHRUNKEN_IMAGES = """(scale) => [...document.querySelectorAll('.cell_output img')].filter(img =>
    img.naturalWidth && img.offsetParent !== null
    && img.getBoundingClientRect().width < img.naturalWidth * scale - 1
).map(img => `${img.alt || img.src.slice(-40)}: ${Math.round(img.getBoundingClientRect().width)} of ${img.naturalWidth} px`)"""
# Display equations that are cut (wider than their box) and show no scroll cue: book.css draws a
# shadow on the side where more of the equation hides, with backgrounds on the scrolling box; a
# phone's browser hides scroll bars until the reader touches them, so a bar alone is no cue.
_CUT_WITHOUT_CUE = """() => [...document.querySelectorAll('mjx-container[display="true"]')].filter(eq => {
    if (eq.scrollWidth <= eq.clientWidth + 1) return false;
    const style = getComputedStyle(eq);
    return !/(auto|scroll)/.test(style.overflowX) || !style.backgroundImage.includes('radial-gradient');
}).map(eq => eq.textContent.slice(0, 80))"""
# Output images (figures and slider frames) that stick out of their box at this width, so that part
# of them is out of view; tools/site_scripts.py puts every output image in a box of its own.
_WIDE_FIGURES = """() => [...document.querySelectorAll('.cell_output img')].filter(img => img.offsetParent !== null)
    .filter(img => {
        const box = img.closest('.soteria-figure-box') || img.parentElement;
        return box.scrollWidth > box.clientWidth + 1
            || img.getBoundingClientRect().right > box.getBoundingClientRect().right + 1;
    }).map(img => `${img.alt || img.src.slice(-40)}: ${Math.round(img.getBoundingClientRect().width)} px`)"""
# Display equations wider than their box (they would need a scroll bar at this width).
_OVERFLOWING_EQUATIONS = """() => [...document.querySelectorAll('mjx-container[display="true"]')].filter(
    eq => eq.scrollWidth > eq.clientWidth + 1).map(eq => eq.textContent.slice(0, 80))"""
# SHA-256 of the image the frame slider shows (only the stack's selected frame is visible).
_FRAME_DIGEST = """async (box) => {
    const shown = [...box.querySelectorAll('img')].filter(img => img.offsetParent !== null);
    if (shown.length !== 1 || !shown[0].src) return null;
    const bytes = await (await fetch(shown[0].src)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return Array.from(new Uint8Array(digest), b => b.toString(16).padStart(2, '0')).join('');
}"""


def _check_arrow_keys(page, box) -> None:
    """With the handle focused, one arrow key shows another frame, the opposite one the first
    frame again (ArrowRight then ArrowLeft, or the reverse when the slider starts at its end)."""
    handle = box.locator(".noUi-handle").first
    readout = box.locator(".widget-readout").first
    start_frame, start_label = box.evaluate(_FRAME_DIGEST), readout.inner_text()
    assert start_frame, "the frame slider does not show exactly one image"
    at_end = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    keys = ("ArrowLeft", "ArrowRight") if at_end else ("ArrowRight", "ArrowLeft")
    handle.focus()
    for key in keys:
        label, frame = readout.inner_text(), box.evaluate(_FRAME_DIGEST)
        page.keyboard.press(key)
        page.wait_for_function("([readout, label]) => readout.innerText !== label",
                               arg=[readout.element_handle(), label], timeout=5000)
        assert _frame_after(page, box, frame) != frame, f"{key} changed the label but not the frame"
    assert readout.inner_text() == start_label
    assert box.evaluate(_FRAME_DIGEST) == start_frame, "going back did not show the first frame again"
    assert handle.get_attribute("aria-valuetext") == start_label, \
        "a screen reader should hear the slider's label (e.g. 20 %), not its position"
    assert handle.get_attribute("aria-label"), "the slider's handle has no accessible name"
    assert "arrow keys" in box.locator(".soteria-slider-hint").inner_text()


def _frame_after(page, box, before: str, timeout_s: float = 5.0) -> str | None:
    """The shown frame's digest once it differs from ``before``, or as it is after the timeout."""
    for _ in range(int(timeout_s / 0.1)):
        now = box.evaluate(_FRAME_DIGEST)
        if now is not None and now != before:
            return now
        page.wait_for_timeout(100)
    return box.evaluate(_FRAME_DIGEST)


def _links_and_ids(html: str) -> tuple[list[str], set[str]]:
    """Every ``href`` of an ``<a>`` and every ``id`` in a page."""
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.ids = [], set()

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if attrs.get("id"):
                self.ids.add(attrs["id"])
            if tag == "a" and attrs.get("href"):
                self.links.append(attrs["href"])

    parser = Collect()
    parser.feed(html)
    return parser.links, parser.ids


@pytest.mark.parametrize("page_path", toc_pages())
def test_internal_links_resolve(page_path, site):
    """Every link from a page of the book to the book (a chapter, an equation, an exercise, a
    citation, the PDF, a lab) lands on an existing page or file and, when it names one, an existing anchor."""
    page = site[1] / f"{page_path}.html"
    if not page.is_file():
        _unavailable(f"{page} is missing: is the site older than _toc.yml? run `bash tools/book.sh --student`")
    links, _ = _links_and_ids(page.read_text())
    broken = []
    for href in links:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
            continue
        target = page if not parts.path else (page.parent / parts.path).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href}: no such page")
            continue
        if parts.fragment and target.suffix == ".html":
            _, ids = _links_and_ids(target.read_text())
            if parts.fragment not in ids:
                broken.append(f"{href}: no anchor #{parts.fragment}")
    assert not broken, "\n".join(broken)
