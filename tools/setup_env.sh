#!/usr/bin/env bash
# Create/refresh the project virtual environment in .venv.
#
#   bash tools/setup_env.sh        # run directly
#   source tools/setup_env.sh      # or source it (tools/test.sh, tools/book.sh do)
#
# - creates .venv with python3.11 (override: PYTHON=/path/to/python) if absent;
# - installs requirements.txt (exact pins), requirements-extras.txt (the optional
#   extras: Ray, Opacus, Flower) and the package itself (-e .), but skips pip when
#   .venv/.soteria-setup-stamp holds the hash of those files + pyproject.toml + this script;
# - if SOTERIA_DATA is set to a relative path, exports it as an absolute path
#   (resolved against the directory you ran the command from), because
#   notebooks execute with their own folder as working directory.
#
# Leaves the shell in the repository root and sets REPO_ROOT.

_soteria_setup() {
    local caller_cwd="$PWD"
    REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    export REPO_ROOT
    cd "$REPO_ROOT" || return 1

    # --- data root: make it absolute -----------------------------------------
    if [[ -n "${SOTERIA_DATA:-}" ]]; then
        if [[ "$SOTERIA_DATA" != /* ]]; then
            SOTERIA_DATA="$caller_cwd/$SOTERIA_DATA"
        fi
        if [[ -d "$SOTERIA_DATA" ]]; then
            SOTERIA_DATA="$(cd "$SOTERIA_DATA" && pwd)"
        else
            echo "setup_env: warning: SOTERIA_DATA=$SOTERIA_DATA is not a directory" >&2
        fi
        export SOTERIA_DATA
    fi

    # --- virtual environment -------------------------------------------------
    local py="${PYTHON:-python3.11}"
    if [[ ! -x .venv/bin/python ]]; then
        echo "setup_env: creating .venv with $py" >&2
        "$py" -m venv .venv || { echo "setup_env: '$py -m venv' failed" >&2; return 1; }
    fi

    local stamp=.venv/.soteria-setup-stamp want have=""
    want="$(cat requirements.txt requirements-extras.txt pyproject.toml tools/setup_env.sh | sha256sum | cut -d' ' -f1)" || return 1
    [[ -f "$stamp" ]] && have="$(cat "$stamp")"
    if [[ "$want" == "$have" ]]; then
        echo "setup_env: .venv up to date (stamp matches), skipping pip" >&2
    else
        echo "setup_env: installing requirements.txt, requirements-extras.txt and -e . into .venv" >&2
        rm -f "$stamp"
        .venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-extras.txt -e . \
            || { echo "setup_env: pip install failed" >&2; return 1; }
        echo "$want" > "$stamp"
    fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    # executed
    set -euo pipefail
    _soteria_setup
else
    # sourced
    _soteria_setup || return 1
fi
