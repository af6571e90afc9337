#!/usr/bin/env bash
# A learning curve of the shipped recipe (docs/results.md, "A learning curve"): for each SHARE, a
# class-stratified share of CACHE_RUN's training photos with their stored views, teacher targets,
# stem outputs and ImageNet features (scripts/subset_cache.py: no new teacher pass), then the
# recipe's first leg on it unchanged (scripts/ablation-cached.sh's `full` row), scored on the
# same validation photos. Resumable: a finished point is skipped, a stopped one resumes.
# Usage: scripts/learning-curve.sh CACHE_RUN SHARE [SHARE ...]      e.g. runs/s0 0.5 0.75
#   CACHE_RUN holds split.json, views.npz, imagenet_features.npy and the stem outputs $STEM
# Environment: STEM (stem_features.npy); BASE, EPOCHS and THREADS as scripts/ablation-cached.sh.
# Each point writes runs/lc<percent>/student.pt, eval.json and eval_camera.json.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
usage="usage: scripts/learning-curve.sh CACHE_RUN SHARE [SHARE ...]"
CACHE=${1:?$usage}
shift
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }
for share in "$@"; do  # every share checked before the first point trains
    [[ $share =~ ^0?\.[0-9]*[1-9][0-9]*$ ]] || { echo "share $share is not a number strictly between 0 and 1" >&2; exit 2; }
done
STEM=${STEM:-stem_features.npy}
for share in "$@"; do
    run=runs/lc$(awk -v s="$share" 'BEGIN { printf "%d", s * 100 + 0.5 }')
    [ -f "$run/split.json" ] || .venv/bin/python scripts/subset_cache.py "$CACHE" "$run" --share "$share" --arrays "$STEM" imagenet_features.npy
    RUN=$run STEM=$STEM scripts/ablation-cached.sh "$run" full  # the recipe's first leg, in the point's own folder
done
