#!/usr/bin/env bash
# Build the Jupyter Book into _build/html, executing every notebook.
# Strict: any Sphinx warning or any failing notebook cell fails the build.
#
#   bash tools/book.sh [--student] [jupyter-book build arguments]
#
# After the build: the graded labs' student notebooks (tools/labs.py) are copied into the
# site's labs/, and the whole book is printed into the site's soteria-book.pdf by the local
# Chromium (tools/book_pdf.py). With --student, the student edition follows (no solutions,
# tools/student_edition.py) in _build/student/html, with its own labs/ and PDF; it also
# refreshes student/ (the notebooks Colab and Binder open; commit them when they changed).
#
# The site loads no file from a CDN: the ipywidgets manager and MathJax come from the npm
# packages pinned in package.json / package-lock.json, installed here with `npm ci` into
# node_modules/ (ignored) and copied to _build/site-assets/, which _config.yml lists in
# html_static_path (so they end up in _build/html/_static/).
set -euo pipefail
student=0
if [[ "${1:-}" == "--student" ]]; then
    student=1
    shift
fi
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"   # cds to the repo root
if [[ ! -x /usr/bin/chromium ]]; then
    echo "book.sh: /usr/bin/chromium is needed to print the PDF: apt-get install -y --no-install-recommends chromium" >&2
    exit 1
fi

# --- front-end assets --------------------------------------------------------
# npm ci wipes node_modules/, so it only runs when the lock file changed.
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
npm_stamp=node_modules/.soteria-npm-stamp
if [[ -f "$npm_stamp" && "$(cat "$npm_stamp")" == "$lock_hash" ]]; then
    echo "book.sh: node_modules up to date (stamp matches), skipping npm ci" >&2
else
    command -v npm >/dev/null || { echo "book.sh: npm (Node.js) is needed for the site's JavaScript" >&2; exit 1; }
    # --ignore-scripts: we only copy files out of the packages, nothing needs building.
    npm ci --ignore-scripts --no-audit --no-fund
    echo "$lock_hash" > "$npm_stamp"
fi

assets=_build/site-assets
widgets_dist=node_modules/@jupyter-widgets/html-manager/dist
rm -rf "$assets"
mkdir -p "$assets/jupyter-widgets"
# embed.js: the stand-alone (no RequireJS) manager with the built-in widgets bundled; it
# fetches its Font Awesome files relative to its own URL, so they sit beside it.
cp "$widgets_dist/embed.js" "$assets/jupyter-widgets/"
find "$widgets_dist" -maxdepth 1 -type f \( -name '*.woff2' -o -name '*.woff' -o -name '*.ttf' \
    -o -name '*.eot' -o -name '*.svg' \) -exec cp {} "$assets/jupyter-widgets/" \;
# MathJax loads its fonts and TeX extensions on demand from beside tex-mml-chtml.js.
cp -r node_modules/mathjax/es5 "$assets/mathjax"

# -W: warnings are errors; -n: nitpicky (broken references warn);
# --keep-going: report all warnings before failing;
# --all: fresh Sphinx environment every time. Without it an incremental build
#   re-reads only changed pages, so it neither re-executes unchanged notebooks
#   (despite execute_notebooks: force) nor repeats their warnings: a second
#   build after a failed one would pass.
.venv/bin/jupyter-book build . --all -W -n --keep-going "$@"

index="$REPO_ROOT/_build/html/index.html"
if [[ ! -f "$index" ]]; then
    echo "book.sh: build finished but $index is missing" >&2
    exit 1
fi

# --- the labs' student notebooks and the PDF, in each edition ---------------------------
.venv/bin/python tools/labs.py
finish_site() {  # $1: a built site
    mkdir -p "$1/labs"
    cp _build/labs/*/student/*.ipynb "$1/labs/"
    .venv/bin/python tools/book_pdf.py "$1"
}
finish_site _build/html
if (( student )); then
    .venv/bin/python tools/student_edition.py site
    finish_site _build/student/html
    echo "$REPO_ROOT/_build/student/html/index.html"
fi
echo "$index"
