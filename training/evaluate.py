"""`wastesort-train evaluate`: score a checkpoint on any ImageFolder with the same class names.

A student checkpoint goes through `model.load_classifier` -- the exact inference path of the
daemon, preprocessing included. A teacher checkpoint (`wastesort-train teacher`) is scored through
its own input (size and normalisation recorded in it), so the two can stand side by side.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from model.inference import Prediction, load_classifier
from model.preprocess import PreprocessConfig, preprocess_bgr
from model.teacher import DEFAULT_TEACHER, TEACHER_FORMAT, TEACHER_INPUTS
from model.unknown import softmax, unknown_scores

from .camera_degrade import VAL_CAMERA, VAL_CAMERA_SEED, fixed_degradation
from .data import DataError, scan_image_folder
from .metrics import Metrics, compute_metrics, reject_curve
from .teacher_train import load_teacher_spec

REJECT_CURVE_THRESHOLDS = [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="ImageFolder root, or a run's split.json to score its validation part")
    p.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch")
    p.add_argument("--json", action="store_true", help="print only the metrics as one JSON object")
    p.add_argument("--confusion-png", type=Path, default=None, help="where to write the confusion matrix image")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--camera", action="store_true", help="score the photos as a belt camera delivers them (smaller, JPEG quality 50-80, fixed per photo: training.camera_degrade.VAL_CAMERA), the figure distill logs as val_camera_acc")


def paths_and_labels(data: Path, class_names: list[str]) -> tuple[list[str], np.ndarray]:
    if data.suffix == ".json":
        d = json.loads(data.read_text())
        if d["class_names"] != class_names:
            raise DataError(f"split classes {d['class_names']} differ from the model's {class_names}")
        root = Path(d["root"])
        return [str(root / p) for p, _ in d["val"]], np.asarray([y for _, y in d["val"]])
    index = scan_image_folder(data, class_names)
    return [s.path for s in index.samples], np.asarray([s.label for s in index.samples])


def camera_view(bgr: np.ndarray, index: int) -> np.ndarray:
    """Photo `index` as distill's val_camera_acc sees it: at the teacher's input size, then degraded."""
    size = TEACHER_INPUTS[DEFAULT_TEACHER]
    rgb = cv2.cvtColor(cv2.resize(bgr, (size.width, size.height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(fixed_degradation(VAL_CAMERA, rgb, VAL_CAMERA_SEED, index), cv2.COLOR_RGB2BGR)


@dataclass(frozen=True)
class Scored:
    """What evaluation needs of a checkpoint: its classes, logits and features for BGR images,
    the temperature its probabilities use, and its unknown-item rule (None: 1 - max softmax)."""

    class_names: list[str]
    logits_and_features: Callable[[Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray]]
    temperature: float
    unknown: dict | None


def is_teacher_checkpoint(path: Path) -> bool:
    if path.suffix == ".onnx" or not path.is_file():  # an exported student, or load_classifier's clear error
        return False
    d = torch.load(path, map_location="cpu", weights_only=True)
    return isinstance(d, dict) and d.get("format") == TEACHER_FORMAT


def _teacher(path: Path, backend: str) -> tuple[Scored, PreprocessConfig]:
    """A teacher in torch at its own input; no temperature (1.0) and no unknown rule are stored in
    a teacher file, so its ECE is the raw one and its reject curve uses the maximum softmax."""
    if backend != "torch":
        raise ValueError(f"{path} is a teacher checkpoint: it is scored with --backend torch (not {backend})")
    model, spec, names = load_teacher_spec(path, torch.device("cpu"))

    def run(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits = model(torch.from_numpy(preprocess_bgr(images, spec.preprocess))).numpy()
        return logits, np.zeros((len(logits), 0), np.float32)

    return Scored(names, run, 1.0, None), spec.preprocess


@dataclass(frozen=True)
class TeacherClassifier:
    """A teacher with the daemon classifier's `predict` (scripts that put a model on the simulated
    belt, e.g. scripts/belt_crops.py, score a teacher the same way as a student)."""

    scored: Scored
    preprocess: PreprocessConfig

    @property
    def class_names(self) -> list[str]:
        return self.scored.class_names

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        if len(images) == 0:
            return []
        logits, feats = self.scored.logits_and_features(images)
        t = self.scored.temperature
        probs, unknown = softmax(logits, t), unknown_scores(logits, feats, self.scored.unknown, t)
        return [Prediction(self.class_names[int(p.argmax())], float(p.max()), dict(zip(self.class_names, map(float, p))), float(u)) for p, u in zip(probs, unknown)]


def teacher_classifier(path: Path) -> TeacherClassifier:
    return TeacherClassifier(*_teacher(path, "torch"))


def scored_checkpoint(checkpoint: Path, backend: str) -> Scored:
    if is_teacher_checkpoint(checkpoint):
        return _teacher(checkpoint, backend)[0]
    clf = load_classifier(checkpoint, backend)  # type: ignore[arg-type]
    return Scored(clf.class_names, clf.logits_and_features, clf.checkpoint.temperature, clf.checkpoint.unknown)


def evaluate_checkpoint(checkpoint: Path, data: Path, backend: str = "torch", batch_size: int = 64, camera: bool = False) -> tuple[Metrics, list[str], list[dict[str, float | None]]]:
    """Metrics with the checkpoint's temperature, and the reject curve of the daemon's rule."""
    clf = scored_checkpoint(checkpoint, backend)
    paths, labels = paths_and_labels(data, clf.class_names)
    logits, feats = [], []
    for i in range(0, len(paths), batch_size):
        imgs = [cv2.imread(p, cv2.IMREAD_COLOR) for p in paths[i : i + batch_size]]
        if camera:
            imgs = [camera_view(img, i + j) if img is not None else img for j, img in enumerate(imgs)]
        lg, ft = clf.logits_and_features(imgs)
        logits.append(lg)
        feats.append(ft)
    lg, ft, t = np.concatenate(logits), np.concatenate(feats), clf.temperature
    curve = reject_curve(softmax(lg, t), unknown_scores(lg, ft, clf.unknown, t), labels, REJECT_CURVE_THRESHOLDS)
    return compute_metrics(lg, labels, clf.class_names, t), clf.class_names, curve


def save_confusion_png(metrics: Metrics, class_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics.confusion)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(f"accuracy {metrics.accuracy:.3f}, macro-F1 {metrics.macro_f1:.3f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    metrics, names, curve = evaluate_checkpoint(args.checkpoint, args.data, args.backend, args.batch_size, args.camera)
    png = args.confusion_png or args.checkpoint.with_name(args.checkpoint.stem + "_confusion.png")
    save_confusion_png(metrics, names, png)
    result = metrics.to_dict()
    result["confusion_png"] = str(png)
    result["reject_curve"] = curve
    if not args.json:
        print(f"accuracy {metrics.accuracy:.4f}  macro-F1 {metrics.macro_f1:.4f}  ECE {metrics.ece:.4f}  n={metrics.n}")
        for name, pc in metrics.per_class.items():
            print(f"  {name:10s} precision {pc['precision']:.3f} recall {pc['recall']:.3f} f1 {pc['f1']:.3f} n={pc['support']}")
        print("daemon reject rule (unknown <= 0.5 and confidence >= t): t, share sorted, accuracy of sorted")
        for r in curve:
            acc = "–" if r["sorted_accuracy"] is None else f"{r['sorted_accuracy']:.3f}"
            print(f"  {r['confidence_threshold']:.2f}  {r['sorted_share']:.3f}  {acc}")
    return result
