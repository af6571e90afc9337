#!/usr/bin/env bash
# Trains the shipped model end to end on CPU (or on a GPU with DEVICE=cuda WORKERS=8), resumable:
# re-running it continues where it stopped. Usage: scripts/train-default.sh [RUN_DIR]
# The budget is set by TEACHER_EPOCHS, META_ITERS and DISTILL_EPOCHS (defaults: the CPU run
# recorded in docs/results.md; a GPU run can afford about 10x more of each).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/main}
DEVICE=${DEVICE:-cpu}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-22}
META_ITERS=${META_ITERS:-200}
DISTILL_EPOCHS=${DISTILL_EPOCHS:-25}
WORKERS=${WORKERS:-0}   # data-loading processes: use several on a GPU machine
T=.venv/bin/wastesort-train
$T teacher --run-dir "$RUN" --device "$DEVICE" --epochs "$TEACHER_EPOCHS" --workers "$WORKERS" --resume
$T meta    --run-dir "$RUN" --device "$DEVICE" --iterations "$META_ITERS" --resume
$T distill --run-dir "$RUN" --device "$DEVICE" --epochs "$DISTILL_EPOCHS" --workers "$WORKERS" --resume
$T evaluate --checkpoint "$RUN/student.pt" --data "$RUN/split.json" --json > "$RUN/student_eval.json"
$T export --checkpoint "$RUN/student.pt"
echo "done: $RUN/student.pt (install with: $T export --checkpoint $RUN/student.pt --install model/weights/default.pt)"
