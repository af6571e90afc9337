#!/usr/bin/env bash
# Trains the shipped model end to end on CPU (or on a GPU with DEVICE=cuda WORKERS=8), resumable:
# re-running it continues where it stopped. Usage: scripts/train-default.sh [RUN_DIR]
# Recipe (docs/method.md, docs/results.md): fine-tune the ImageNet EfficientNet-Lite0 teacher on
# backdrop-free views; store its logits for VIEWS fixed views of every photo together with the
# student stem's output for them; meta-train the transformer (first training); distil from the
# stored views (second training). Budget: TEACHER_EPOCHS, VIEWS, META_ITERS, DISTILL_EPOCHS.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/main}
DEVICE=${DEVICE:-cpu}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-8}
VIEWS=${VIEWS:-10}
META_ITERS=${META_ITERS:-100}
DISTILL_EPOCHS=${DISTILL_EPOCHS:-40}
WORKERS=${WORKERS:-0}   # data-loading processes: use several on a GPU machine
CONFIG=${CONFIG:-training/configs/student_lite0_192x144.json}
T=.venv/bin/wastesort-train
$T teacher --run-dir "$RUN" --device "$DEVICE" --epochs "$TEACHER_EPOCHS" --workers "$WORKERS" --resume
[ -f "$RUN/stem_features.npy" ] || $T teacher-cache --run-dir "$RUN" --device "$DEVICE" --views "$VIEWS" --student-config "$CONFIG" --workers "$WORKERS"
$T meta    --run-dir "$RUN" --device "$DEVICE" --iterations "$META_ITERS" --config "$CONFIG" --stem-from-teacher "$RUN/teacher.pt" --resume
$T distill --run-dir "$RUN" --device "$DEVICE" --epochs "$DISTILL_EPOCHS" --views "$RUN/views.npz" --stem-features "$RUN/stem_features.npy" --workers "$WORKERS" --resume
$T evaluate --checkpoint "$RUN/student.pt" --data "$RUN/split.json" --json > "$RUN/student_eval.json"
$T export --checkpoint "$RUN/student.pt"
echo "done: $RUN/student.pt (install with: $T export --checkpoint $RUN/student.pt --install model/weights/default.pt)"
