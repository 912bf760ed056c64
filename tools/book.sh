#!/usr/bin/env bash
# Build the Jupyter Book into _build/html, executing every notebook.
# Strict: any Sphinx warning or any failing notebook cell fails the build.
# Extra arguments go to `jupyter-book build`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"   # cds to the repo root

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
echo "$index"
