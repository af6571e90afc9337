#!/usr/bin/env bash
# Trains the shipped model end to end on CPU (or on a GPU with DEVICE=cuda WORKERS=8), resumable:
# re-running it continues where it stopped. Usage: scripts/train-default.sh [RUN_DIR]
# Recipe (docs/method.md, docs/results.md): fine-tune the ImageNet EfficientNet-Lite0 teacher on
# backdrop-free views (8 epochs, then 8 more from there at a lower learning rate); store its
# mirror-averaged predictions for VIEWS fixed views of every photo, with the student stem's output
# and the ImageNet network's features of each view; meta-train the transformer from the stored
# stem outputs (first training); distil from the stored views, logits and ImageNet features
# (second training). Budget: TEACHER_EPOCHS, VIEWS, META_ITERS, DISTILL_EPOCHS.
# To skip the teacher's 25-40 minutes, copy training/weights/teacher_efficientnet_lite0.pt to
# RUN_DIR/teacher.pt and training/splits/trashnet_seed0.json to RUN_DIR/split.json first.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/main}
DEVICE=${DEVICE:-cpu}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-8}
VIEWS=${VIEWS:-10}
META_ITERS=${META_ITERS:-300}
DISTILL_EPOCHS=${DISTILL_EPOCHS:-40}
WORKERS=${WORKERS:-0}   # data-loading processes: use several on a GPU machine
CONFIG=${CONFIG:-training/configs/student_lite0_192x144.json}
T=.venv/bin/wastesort-train
mkdir -p "$RUN"
if [ ! -f "$RUN/teacher.pt" ] || [ -f "$RUN/teacher_state.pt" ]; then
    $T teacher --run-dir "$RUN/teacher_first" --device "$DEVICE" --epochs "$TEACHER_EPOCHS" --workers "$WORKERS" --resume
    $T teacher --run-dir "$RUN" --device "$DEVICE" --epochs "$TEACHER_EPOCHS" --lr 4e-4 --init "$RUN/teacher_first/teacher.pt" --workers "$WORKERS" --resume
fi
[ -f "$RUN/imagenet_features.npy" ] || $T teacher-cache --run-dir "$RUN" --device "$DEVICE" --views "$VIEWS" --student-config "$CONFIG" \
    --flip-average --imagenet-features --workers "$WORKERS"
CACHED=(--views "$RUN/views.npz" --stem-features "$RUN/stem_features.npy")
$T meta    --run-dir "$RUN" --device "$DEVICE" --iterations "$META_ITERS" --config "$CONFIG" "${CACHED[@]}" --resume
$T distill --run-dir "$RUN" --device "$DEVICE" --epochs "$DISTILL_EPOCHS" "${CACHED[@]}" --imagenet-features "$RUN/imagenet_features.npy" \
    --workers "$WORKERS" --resume
# the reject rule of the shipped model: Mahalanobis on the class token, fitted on photos and rendered views
$T unknown-fit --checkpoint "$RUN/student.pt" --split "$RUN/split.json" --method mahalanobis --views 2
$T evaluate --checkpoint "$RUN/student.pt" --data "$RUN/split.json" --json > "$RUN/student_eval.json"
$T export --checkpoint "$RUN/student.pt"
echo "done: $RUN/student.pt (install with: $T export --checkpoint $RUN/student.pt --install model/weights/default.pt)"
