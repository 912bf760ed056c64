#!/usr/bin/env bash
# Regenerate requirements-lock.txt (its header records the exact uv command): every package of the book-and-test environment, transitive
# ones included, pinned with the hashes of every file PyPI serves for it. Run it after changing a
# pin in requirements.txt or requirements-extras.txt, then commit the lock with them:
#
#   bash tools/lock.sh
#
# uv (Astral's resolver, a dependency of Flower, so already in .venv) resolves for CPython 3.11
# (the oldest Python the library supports: a package needing a newer 3.11.x is not chosen) on
# x86-64 Linux with glibc 2.28 or newer, the machines of CI and of the book's authors. PyPI's
# torch for that platform is its CUDA build, so the lock holds the CUDA packages too;
# tools/setup_env.sh leaves them out for a CPU-only machine (SOTERIA_TORCH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv=.venv/bin/uv
[[ -x "$uv" ]] || uv="$(command -v uv)" || { echo "lock.sh: uv is needed (pip install uv)" >&2; exit 1; }
"$uv" pip compile requirements.txt requirements-extras.txt --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 \
    --quiet -o requirements-lock.txt
echo "lock.sh: wrote requirements-lock.txt ($(grep -c '^[a-z0-9]' requirements-lock.txt) packages)" >&2
