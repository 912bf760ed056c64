#!/usr/bin/env bash
# Run the test suite: tests/ plus every notebook in notebooks/ (executed by nbval).
# Extra arguments go to pytest (paths relative to the repo root), e.g.
#   bash tools/test.sh notebooks/      bash tools/test.sh -m "not slow"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"   # cds to the repo root
exec .venv/bin/python -m pytest "$@"
