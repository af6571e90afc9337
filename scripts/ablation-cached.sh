#!/usr/bin/env bash
# Ablation rows with the shipped recipe (issue 19, item 4): the shipped student's cached views,
# teacher targets, stem outputs and ImageNet features, 40 epochs of distillation from random init
# (the first leg of scripts/train-default.sh), with one thing changed per row. The stem outputs are
# the same for every row (the stem is not what changes). Resumable: a finished row is skipped.
# Usage: scripts/ablation-cached.sh CACHE_RUN [ROWS...]
#   CACHE_RUN holds split.json, views.npz, imagenet_features.npy and the stem outputs $STEM
#   ROWS (default: all five):
#     full        nothing changed: the shipped recipe's first leg itself (runs/t9 in docs/results.md),
#                 the reference the other rows are read against when the cache is rebuilt
#     global      plain global attention instead of global + window
#     mlp         a plain MLP instead of the convolutional feed-forward
#     no-distill  labels only: no teacher logits, no ImageNet features (cross-entropy on both heads)
#     meta        the patent's first training (META_ITERS meta-iterations) before the same distillation
# Environment: BASE (config, default the shipped one), STEM (stem-output file name inside
# CACHE_RUN, default stem_imagenet4.npy), EPOCHS (40), META_ITERS (300), THREADS (2), RUN (with
# one row only: its run folder instead of runs/abl_<row>; scripts/learning-curve.sh trains its
# points as the `full` row this way).
# Each row writes runs/abl_<row>/student.pt, eval.json and eval_camera.json.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
CACHE=${1:?usage: scripts/ablation-cached.sh CACHE_RUN [ROWS...]}
shift
ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(full global mlp no-distill meta)
EPOCHS=${EPOCHS:-40}
META_ITERS=${META_ITERS:-300}
THREADS=${THREADS:-2}
BASE=${BASE:-training/configs/student_lite0_192x144_tune1.json}
STEM=${STEM:-stem_imagenet4.npy}
T=.venv/bin/wastesort-train
for row in "${ROWS[@]}"; do  # every row checked before the first trains: a typo must not wait behind a 15-minute run
    case "$row" in
        full | global | mlp | no-distill | meta) ;;
        *) echo "unknown row $row (full, global, mlp, no-distill, meta)" >&2; exit 2 ;;
    esac
done
if [ -n "${RUN:-}" ] && [ ${#ROWS[@]} -ne 1 ]; then
    echo "RUN names the run folder of one row; ${#ROWS[@]} rows given" >&2; exit 2
fi
for row in "${ROWS[@]}"; do
    run=${RUN:-runs/abl_$row}
    change='{}'
    targets=(--imagenet-features "$CACHE/imagenet_features.npy")
    init=()
    case "$row" in
        full) ;;
        global) change='{"window_radius": null}' ;;
        mlp) change='{"conv_ffn": false}' ;;
        no-distill) targets=(--teacher none) ;;
        meta) init=(--init "$run/meta_student.pt") ;;
    esac
    mkdir -p "$run"
    [ "$CACHE/split.json" -ef "$run/split.json" ] || cp -n "$CACHE/split.json" "$run/split.json"
    .venv/bin/python -c "import json, sys; c = json.load(open('$BASE')); c.update(json.loads(sys.argv[1])); json.dump(c, open('$run/config.json', 'w'), indent=2)" "$change"
    cached=(--views "$CACHE/views.npz" --stem-features "$CACHE/$STEM" --threads "$THREADS")
    # meta writes meta_student.pt every 50 iterations: always resume it (a finished stage returns at once)
    if [ "$row" = meta ] && [ ! -f "$run/student.pt" ]; then
        $T meta --run-dir "$run" --iterations "$META_ITERS" --config "$run/config.json" "${cached[@]}" --resume
    fi
    [ -f "$run/student.pt" ] || $T distill --run-dir "$run" --epochs "$EPOCHS" --config "$run/config.json" "${cached[@]}" \
        "${targets[@]}" "${init[@]}" --resume
    $T evaluate --checkpoint "$run/student.pt" --data "$run/split.json" --json > "$run/eval.json"
    $T evaluate --checkpoint "$run/student.pt" --data "$run/split.json" --camera --json > "$run/eval_camera.json"
done
