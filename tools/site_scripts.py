"""Sphinx extension (listed in _config.yml) that fixes five problems of the book's pages.

* Sphinx 7.4 registers an inline script that an extension adds after the builder started (as
  sphinx-thebe and sphinx-togglebutton do) twice, once with the file name ``None`` and once
  with ``''``; sphinx-thebe's second ``const THEBE_JS_URL = ...`` is then a JavaScript error on
  every page. :func:`_dedupe` keeps the first copy of each script.
* A frame slider's handle announces its position ("2") to a screen reader; :data:`SLIDER_LABELS`
  gives it the label the reader sees as its value (``aria-valuetext``, "20 %") and the
  slider's description as its name, and keeps the value current as the slider moves.
* A figure wider than a phone's column (a viewport under ``NARROW_SCREEN``) is scaled down until its text is a few pixels high;
  :data:`LEGIBLE_FIGURES` keeps every output image at least ``LEGIBLE_SCALE`` of its natural
  size (the figures are drawn at 100 dpi, where the smallest text, 8 pt, is 11 px: it stays
  near 9 px), in a
  box that scrolls sideways, as wide code does.
* Where a display equation, a table or a figure's box is wider than the column (a phone), the
  reader should see that it scrolls: :data:`SCROLL_CUES` marks such a box with the class
  ``soteria-scrolls``, for which book.css draws a shadow on the side where more is hidden (a
  phone's browser hides scroll bars until they are touched). Boxes that fit get no background.
* ipywidgets 8 typesets widget labels with the MathJax 2 call
  ``MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])``, an error under the MathJax 3 the
  book uses. :data:`MATHJAX_HUB_SHIM` forwards that call to MathJax 3's ``typesetPromise``.
"""

MATHJAX_HUB_SHIM = """
document.addEventListener("DOMContentLoaded", () => {
  const mathjax = window.MathJax;  // deferred scripts, MathJax among them, have run by now
  if (!mathjax || !mathjax.startup || mathjax.Hub) return;
  mathjax.Hub = {Queue: (...calls) => calls.forEach((call) => {
    if (Array.isArray(call) && call[0] === "Typeset") {
      mathjax.startup.promise.then(() => mathjax.typesetPromise([call[2]]));
    }
  })};
});
"""


SLIDER_LABELS = """
function soteriaSliderLabels() {
  document.querySelectorAll(".soteria-frame-slider").forEach((box) => {
    const handle = box.querySelector(".noUi-handle");
    const readout = box.querySelector(".widget-readout");
    const label = box.querySelector(".widget-label");
    if (!handle || !readout || handle.dataset.soteriaLabelled) return;
    handle.dataset.soteriaLabelled = "1";
    if (label && label.textContent.trim()) handle.setAttribute("aria-label", label.textContent.trim());
    const update = () => {  // the slider library sets its own number after each move: replace it
      const text = readout.textContent.trim();
      if (handle.getAttribute("aria-valuetext") !== text) handle.setAttribute("aria-valuetext", text);
    };
    update();
    new MutationObserver(update).observe(readout, {childList: true, characterData: true, subtree: true});
    new MutationObserver(update).observe(handle, {attributes: true, attributeFilter: ["aria-valuetext"]});
  });
}
document.addEventListener("DOMContentLoaded", () => {
  soteriaSliderLabels();  // widgets render after the page loads: label them as they appear
  new MutationObserver(soteriaSliderLabels).observe(document.body, {childList: true, subtree: true});
});
"""


LEGIBLE_SCALE = 0.8
NARROW_SCREEN = 768  # px of viewport below which figures keep LEGIBLE_SCALE and scroll

LEGIBLE_FIGURES = """
function soteriaLegibleFigures() {
  document.querySelectorAll("div.cell_output img").forEach((img) => {
    if (!img.naturalWidth || !img.parentElement) return;  // not loaded yet: its load event returns here
    if (img.parentElement.tagName === "FIGURE") {  // scroll the image alone, not its caption
      const wrap = document.createElement("div");
      img.before(wrap);
      wrap.append(img);
    }
    const box = img.parentElement;
    box.classList.add("soteria-figure-box");
    const least = Math.round(img.naturalWidth * %s);
    // on a phone or small tablet the column would draw it below the legible scale; a desktop
    // column shows the whole figure, as the reader expects
    const shrunk = window.innerWidth < %d && box.clientWidth < least;
    img.style.maxWidth = shrunk ? "none" : "";
    img.style.width = shrunk ? least + "px" : "";
  });
}
window.addEventListener("load", soteriaLegibleFigures);
window.addEventListener("resize", soteriaLegibleFigures);
document.addEventListener("load", (event) => {  // images that arrive later (widget frames)
  if (event.target.tagName === "IMG") soteriaLegibleFigures();
}, true);
""" % (LEGIBLE_SCALE, NARROW_SCREEN)


SCROLL_CUES = """
function soteriaScrollCues() {
  const boxes = 'div.math mjx-container[display="true"], .bd-article table.table, div.cell_output .soteria-figure-box';
  document.querySelectorAll(boxes).forEach((box) => {
    box.classList.toggle("soteria-scrolls", box.scrollWidth > box.clientWidth + 1);
  });
}
window.addEventListener("load", () => {
  soteriaScrollCues();
  const mathjax = window.MathJax;  // equations take their width once MathJax has typeset them
  if (mathjax && mathjax.startup && mathjax.startup.promise) mathjax.startup.promise.then(soteriaScrollCues);
});
window.addEventListener("resize", () => requestAnimationFrame(soteriaScrollCues));
document.addEventListener("load", (event) => {  // figures that arrive later (widget frames)
  if (event.target.tagName === "IMG") requestAnimationFrame(soteriaScrollCues);
}, true);
"""


def _dedupe(app, pagename, templatename, context, doctree):
    scripts, seen, unique = context.get("script_files") or [], set(), []
    for script in scripts:
        key = (script.filename or "", script.priority, *sorted(script.attributes.items()))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.add_js_file(None, body=MATHJAX_HUB_SHIM)
    app.add_js_file(None, body=SLIDER_LABELS)
    app.add_js_file(None, body=LEGIBLE_FIGURES)
    app.add_js_file(None, body=SCROLL_CUES)  # after LEGIBLE_FIGURES, which sizes the figures' boxes
    app.connect("html-page-context", _dedupe, priority=900)  # after myst-nb adds its own scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
