"""scripts/ensemble_tta_check.py: the flip / ensemble accuracies it reports are the real ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from model.inference import load_classifier
from model.testing import make_tiny_checkpoint
from model.unknown import softmax

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensemble_tta_check.py"


def test_reports_flip_and_ensemble_accuracy_of_the_given_checkpoints(image_folder: Path, tmp_path: Path) -> None:
    a, b = make_tiny_checkpoint(tmp_path / "a.pt", seed=0), make_tiny_checkpoint(tmp_path / "b.pt", seed=1)
    run = subprocess.run([sys.executable, str(SCRIPT), "--data", str(image_folder), str(a), str(b)], capture_output=True, text=True, check=True)
    out = json.loads(run.stdout)

    clf_a, clf_b = load_classifier(a), load_classifier(b)
    files = sorted((p, i) for i, c in enumerate(clf_a.class_names) for p in (image_folder / c).iterdir())
    labels = np.array([i for _, i in files])
    images = [cv2.imread(str(p)) for p, _ in files]

    def probs(clf, imgs):  # type: ignore[no-untyped-def]
        return softmax(clf.logits_and_features(imgs)[0], clf.checkpoint.temperature)

    def acc(pr: np.ndarray) -> float:
        return round(float((pr.argmax(1) == labels).mean()), 4)

    pa, pb = probs(clf_a, images), probs(clf_b, images)
    assert out["single"] == {str(a): acc(pa), str(b): acc(pb)}
    assert out["flip"]["none"] == acc(pa)
    assert out["flip"]["horizontal"] == acc(probs(clf_a, [cv2.flip(im, 1) for im in images]))
    assert out["ensemble"] == {f"{a} + {b}": acc(pa + pb)}
