#!/usr/bin/env bash
# Create/refresh the project virtual environment in .venv.
#
#   bash tools/setup_env.sh        # run directly
#   source tools/setup_env.sh      # or source it (tools/test.sh, tools/book.sh do)
#
# - creates .venv with python3.11 (override: PYTHON=/path/to/python) if absent;
# - installs requirements-lock.txt (every package of the book and its tests, the extras Ray,
#   Opacus and Flower included, pinned with hashes: tools/lock.sh writes it from
#   requirements.txt and requirements-extras.txt) with --require-hashes --no-deps, then the
#   package itself (-e . --no-deps); skips pip when .venv/.soteria-setup-stamp holds the hash
#   of the lock, pyproject.toml, this script and the torch build chosen;
# - SOTERIA_TORCH chooses the torch build, at the lock's versions:
#     cuda  PyPI's torch and torchvision as locked: on Linux the CUDA build, with its CUDA and
#           Triton packages (about 4 GB more);
#     cpu   PyTorch's CPU build of the same versions, from its CPU index (SOTERIA_TORCH_CPU_INDEX,
#           default https://download.pytorch.org/whl/cpu), and none of the CUDA packages; that
#           index publishes no hashes we lock, so these two wheels are pinned but not hash-checked;
#     auto  (default) cuda where an NVIDIA GPU answers (nvidia-smi -L), else cpu; when the CPU
#           index cannot be reached (a network that reaches PyPI only), cuda, saying so;
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

    local torch="${SOTERIA_TORCH:-auto}"
    case "$torch" in
        cpu|cuda) ;;
        auto) if nvidia-smi -L >/dev/null 2>&1; then torch=cuda; else torch=cpu; fi ;;
        *) echo "setup_env: SOTERIA_TORCH must be cpu, cuda or auto, got '$torch'" >&2; return 2 ;;
    esac

    local stamp=.venv/.soteria-setup-stamp want have=""
    want="$(cat requirements-lock.txt pyproject.toml tools/setup_env.sh <(echo "$torch") | sha256sum | cut -d' ' -f1)" \
        || return 1
    [[ -f "$stamp" ]] && have="$(cat "$stamp")"
    if [[ "$want" == "$have" ]]; then
        echo "setup_env: .venv up to date (stamp matches), skipping pip" >&2
        return 0
    fi
    rm -f "$stamp"
    local pip=(.venv/bin/python -m pip install --quiet --no-deps)
    if [[ "$torch" == cpu ]]; then
        echo "setup_env: installing requirements-lock.txt with torch's CPU build into .venv" >&2
        local status=0
        _soteria_install_cpu "${pip[@]}" || status=$?
        if [[ $status == 1 && "${SOTERIA_TORCH:-auto}" == auto ]]; then
            torch=cuda
        elif [[ $status != 0 ]]; then
            return 1
        fi
    fi
    if [[ "$torch" == cuda ]]; then
        echo "setup_env: installing requirements-lock.txt (PyPI's torch) into .venv" >&2
        "${pip[@]}" --require-hashes -r requirements-lock.txt \
            || { echo "setup_env: pip install of requirements-lock.txt failed" >&2; return 1; }
    fi
    "${pip[@]}" --no-build-isolation -e . || { echo "setup_env: pip install -e . failed" >&2; return 1; }
    _soteria_prune "$torch" || return 1
    echo "$want" > "$stamp"
}

# Uninstall what the lock does not hold (left by an older set-up, or by hand), and the CUDA
# packages under torch's CPU build, so that .venv is exactly the lock (tests/test_lock.py).
_soteria_prune() {
    local extra
    extra="$(.venv/bin/python - "$1" <<'PY'
import importlib.metadata, re, sys
name = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {name(m[1]) for m in re.finditer(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==", open("requirements-lock.txt").read(), re.M)}
cuda = re.compile(r"^(nvidia-|cuda-|triton$)")
for dist in importlib.metadata.distributions():
    n = name(dist.metadata["Name"])
    if n not in {"pip", "soteria-lib"} and (n not in locked or (sys.argv[1] == "cpu" and cuda.match(n))):
        print(n)
PY
)" || return 1
    if [[ -n "$extra" ]]; then
        echo "setup_env: removing what the lock does not hold: $(echo $extra)" >&2
        # shellcheck disable=SC2086  # one package per word
        .venv/bin/python -m pip uninstall --quiet --yes $extra
    fi
}

# The lock without torch, torchvision and the CUDA packages (hash-checked), then torch and
# torchvision at the lock's versions from PyTorch's CPU index. Returns 1 when that index cannot
# be reached (auto then installs PyPI's build), 2 when the lock itself fails to install.
_soteria_install_cpu() {
    local lean status=0 index="${SOTERIA_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
    lean="$(mktemp)"
    awk '/^[^ #]/ { skip = ($0 ~ /^(torch|torchvision|triton)==|^(nvidia|cuda)-/) } !skip' requirements-lock.txt > "$lean"
    "$@" --require-hashes -r "$lean" || status=2
    rm -f "$lean"
    if [[ $status != 0 ]]; then
        echo "setup_env: pip install of requirements-lock.txt failed" >&2
        return 2
    fi
    local versions
    versions="$(sed -nE 's/^(torch|torchvision)==([^ ]+).*/\1==\2+cpu/p' requirements-lock.txt)"
    # shellcheck disable=SC2086  # two requirements, one per word
    if ! "$@" --timeout 20 --retries 1 --index-url "$index" $versions; then
        echo "setup_env: torch's CPU build ($(echo $versions)) is not reachable at $index;" \
             "$([[ "${SOTERIA_TORCH:-auto}" == auto ]] && echo "installing PyPI's build instead" || echo "set SOTERIA_TORCH=cuda for PyPI's")" >&2
        return 1
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
