#!/usr/bin/env bash
# The checks that need a GPU, in one run of under 10 minutes on one GPU:
#
#   bash bench/gpu_checks.sh            # on a GPU machine (device cuda)
#   bash bench/gpu_checks.sh --smoke    # the same three checks on a CPU with tiny budgets (a test runs it)
#
# 1. Soteria's scores on the width-64 ConvNet: batched VJPs against the published per-feature loop,
#    batches 1 and 8 (bench/soteria_scores.py; the loop is timed on 256 features and scaled).
# 2. GS with R = 4 restarts, batched (vmap) against sequential, widths 16 and 64 (bench/gs_restarts.py),
#    and our GS against an inversefed-style loop (bench/gs_inversefed.py).
# 3. The original repository's command at the published budget: GS, 24,000 iterations, ConvNet-64,
#    Soteria at 60 %, on the embedded photograph.
# Every section prints its own ratios and the seconds it took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
out="${GPU_CHECKS_OUTPUT:-runs/gpu_checks}"

if [[ "${1:-}" == "--smoke" ]]; then
    device=cpu
    scores=(--models convnet --width 4 --batches 1 --loop_sample 4 --threads 1)
    restarts=(--widths 4 --iterations 2 --repeats 1 --threads 1)
    original=(--scale teaching --max_iterations 3)
elif [[ -z "${1:-}" ]]; then
    device=cuda
    scores=(--models convnet --width 64 --batches 1,8 --loop_sample 256)
    restarts=(--widths 16 64 --iterations 50 --repeats 3)
    original=(--scale paper)
else
    echo "usage: bash bench/gpu_checks.sh [--smoke]" >&2
    exit 2
fi

section() { echo; echo "== $1"; SECONDS=0; }
done_in() { echo "-- ${SECONDS} s"; }

section "1. Soteria scores, ConvNet: batched against the per-feature loop ($device)"
"$PY" bench/soteria_scores.py "${scores[@]}" --device "$device"
done_in

section "2. GS restarts (R = 4): batched against sequential; ours against an inversefed-style loop ($device)"
"$PY" bench/gs_restarts.py --restarts 4 "${restarts[@]}" --device "$device"
"$PY" bench/gs_inversefed.py --restarts 1 "${restarts[@]}" --device "$device"
done_in

section "3. The original command at the published budget ($device)"
"$PY" -m soteria_lib.reconstruct --target_id=-1 --defense=ours --pruning_rate=60 --save_image \
    --device "$device" --no_progress --output "$out" "${original[@]}"
done_in
