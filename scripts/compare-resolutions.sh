#!/usr/bin/env bash
# Student input size against accuracy and latency, with the same budget as the shipped student
# (issue 19, item 4): the same cached views, ensemble targets and ImageNet features, the stem
# outputs of each size stored once (half of the views camera-degraded, as shipped), 40 epochs of
# distillation from random init. Resumable: a finished size is skipped.
# Usage: scripts/compare-resolutions.sh CACHE_RUN [SIZES...]
#   CACHE_RUN holds views.npz, views_ens.npz and imagenet_features.npy (scripts/train-default.sh)
#   SIZES default to 128x96 160x128 (192x144 is the shipped run itself)
# Each size writes runs/res_<size>/student.pt and runs/res_<size>/eval.json.
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
    [ -f "$run/stem_camera.npy" ] || $T teacher-cache --run-dir "$CACHE" --views 10 --student-config "$config" \
        --stem-only --camera-degrade 0.5 --stem-out "$run/stem_camera.npy"
    [ -f "$run/student.pt" ] || $T distill --run-dir "$run" --epochs "$EPOCHS" --config "$config" --views "$CACHE/views_ens.npz" \
        --stem-features "$run/stem_camera.npy" --imagenet-features "$CACHE/imagenet_features.npy" --resume
    $T evaluate --checkpoint "$run/student.pt" --data "$run/split.json" --json > "$run/eval.json"
    $T evaluate --checkpoint "$run/student.pt" --data "$run/split.json" --camera --json > "$run/eval_camera.json"
done
