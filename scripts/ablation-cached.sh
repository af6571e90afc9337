#!/usr/bin/env bash
# Ablation rows with the shipped recipe (issue 19, item 4): the shipped student's cached views,
# teacher targets, stem outputs and ImageNet features, 40 epochs of distillation from random init
# (scripts/train-default.sh), with one part of the architecture changed. The stem outputs are the
# same for every row (the stem is not what changes). Resumable: a finished row is skipped.
# Usage: scripts/ablation-cached.sh CACHE_RUN [ROWS...]
#   CACHE_RUN holds split.json, views.npz, stem_features.npy and imagenet_features.npy (192x144)
#   ROWS: global (plain global attention instead of global + window), mlp (a plain MLP instead of
#   the convolutional feed-forward); default both. The full row is the shipped run itself
#   (or runs/res_192x144 from scripts/compare-resolutions.sh CACHE_RUN 192x144).
# Each row writes runs/abl_<row>/student.pt, eval.json and eval_camera.json.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:?usage: scripts/ablation-cached.sh CACHE_RUN [ROWS...]}
shift
ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(global mlp)
EPOCHS=${EPOCHS:-40}
BASE=training/configs/student_lite0_192x144.json
T=.venv/bin/wastesort-train
for row in "${ROWS[@]}"; do
    case "$row" in
        global) change='{"window_radius": null}' ;;
        mlp) change='{"conv_ffn": false}' ;;
        *) echo "unknown row $row (global, mlp)" >&2; exit 2 ;;
    esac
    run=runs/abl_$row
    mkdir -p "$run" && cp -n "$CACHE/split.json" "$run/split.json"
    .venv/bin/python -c "import json, sys; c = json.load(open('$BASE')); c.update(json.loads(sys.argv[1])); json.dump(c, open('$run/config.json', 'w'), indent=2)" "$change"
    [ -f "$run/student.pt" ] || $T distill --run-dir "$run" --epochs "$EPOCHS" --config "$run/config.json" --views "$CACHE/views.npz" \
        --stem-features "$CACHE/stem_features.npy" --imagenet-features "$CACHE/imagenet_features.npy" --resume
    $T evaluate --checkpoint "$run/student.pt" --data "$run/split.json" --json > "$run/eval.json"
    $T evaluate --checkpoint "$run/student.pt" --data "$run/split.json" --camera --json > "$run/eval_camera.json"
done
