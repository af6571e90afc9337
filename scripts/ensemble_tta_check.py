"""Validation accuracy of flip test-time augmentation and of checkpoint ensembles.

Both are ways to buy accuracy with inference time; this measures whether they buy any before
anyone wires them into the daemon. Probabilities (with each checkpoint's temperature) are
averaged over the flips / checkpoints. Prints one JSON object.

    .venv/bin/python scripts/ensemble_tta_check.py --data training/splits/trashnet_seed0.json \
        model/weights/default.pt runs/main/student_e180.pt runs/main/student_e75.pt
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import cv2
import numpy as np

from model.inference import Classifier, load_classifier
from model.unknown import softmax
from training.evaluate import paths_and_labels

FLIPS = {"none": None, "horizontal": 1, "vertical": 0, "both": -1}  # cv2.flip codes


def probabilities(clf: Classifier, images: list[np.ndarray], flip: int | None, batch: int = 64) -> np.ndarray:
    views = images if flip is None else [cv2.flip(im, flip) for im in images]
    logits = np.concatenate([clf.logits_and_features(views[i : i + batch])[0] for i in range(0, len(views), batch)])
    return softmax(logits, clf.checkpoint.temperature)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", type=Path, nargs="+", help="the first one also gets the flip test")
    p.add_argument("--data", type=Path, required=True, help="ImageFolder root or a split.json (its validation part)")
    args = p.parse_args()
    classifiers = {str(c): load_classifier(c, "torch") for c in args.checkpoints}
    first = classifiers[str(args.checkpoints[0])]
    paths, labels = paths_and_labels(args.data, first.class_names)
    images = [cv2.imread(path, cv2.IMREAD_COLOR) for path in paths]

    def accuracy(prob: np.ndarray) -> float:
        return round(float((prob.argmax(1) == labels).mean()), 4)

    flips = {name: probabilities(first, images, code) for name, code in FLIPS.items()}
    out: dict[str, dict[str, float]] = {"flip": {name: accuracy(pr) for name, pr in flips.items()}}
    out["flip"]["none+horizontal"] = accuracy(flips["none"] + flips["horizontal"])
    out["flip"]["none+vertical"] = accuracy(flips["none"] + flips["vertical"])
    out["flip"]["all four"] = accuracy(sum(flips.values()))
    probs = {name: flips["none"] if clf is first else probabilities(clf, images, None) for name, clf in classifiers.items()}
    out["single"] = {c: accuracy(pr) for c, pr in probs.items()}
    out["ensemble"] = {
        " + ".join(combo): accuracy(sum(probs[c] for c in combo))
        for r in range(2, len(probs) + 1)
        for combo in itertools.combinations(probs, r)
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
