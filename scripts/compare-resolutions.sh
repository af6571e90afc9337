#!/usr/bin/env bash
# Student input size against accuracy and latency, with the same budget as the shipped student
# (issue 19, item 4): the same cached views and teacher targets (views.npz), the same ImageNet
# features, the stem outputs of each size stored once from the same clean views, 40 epochs of
# distillation from random init (scripts/train-default.sh's recipe). Resumable: a finished size is skipped.
# Usage: scripts/compare-resolutions.sh CACHE_RUN [SIZES...]
#   CACHE_RUN holds split.json, views.npz and imagenet_features.npy (scripts/train-default.sh)
#   SIZES default to 128x96 160x128 (192x144 is the shipped run itself)
# Each size writes runs/res_<size>/student.pt, eval.json and eval_camera.json; latency:
#   .venv/bin/wastesort bench latency --model runs/res_<size>/student.pt
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:?usage: scripts/compare-resolutions.sh CACHE_RUN [SIZES...]}
shift
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(128x96 160x128)
EPOCHS=${EPOCHS:-40}
T=.venv/bin/wastesort-train
for size in "${SIZES[@]}"; do
    config=training/configs/student_lite0_${size}.json
    [ -f "$config" ] || { echo "no config $config" >&2; exit 2; }
    run=runs/res_${size}
    mkdir -p "$run" && cp -n "$CACHE/split.json" "$run/split.json"
    [ -f "$run/stem_features.npy" ] || $T teacher-cache --run-dir "$CACHE" --views 10 --student-config "$config" \
        --stem-only --stem-out "$run/stem_features.npy"
    [ -f "$run/student.pt" ] || $T distill --run-dir "$run" --epochs "$EPOCHS" --config "$config" --views "$CACHE/views.npz" \
        --stem-features "$run/stem_features.npy" --imagenet-features "$CACHE/imagenet_features.npy" --resume
    $T evaluate --checkpoint "$run/student.pt" --data "$run/split.json" --json > "$run/eval.json"
    $T evaluate --checkpoint "$run/student.pt" --data "$run/split.json" --camera --json > "$run/eval_camera.json"
done
