"""Where the belt loses accuracy: the validation photos classified as they are, at the belt's item
size, and at that size through JPEG compression (the simulator writes MJPG), by the daemon's own
classifier (its default backend). Prints one JSON object; compare with
`wastesort bench views --photos SPLIT --items 0 --no-realtime`.

    .venv/bin/python scripts/belt_gap.py [--model CHECKPOINT] [--split training/splits/trashnet_seed0.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from daemon.classify import load_model
from daemon.settings import ClassifySettings

BELT_ITEM_PX = 112  # the demo belt's item height (daemon.conveyor_sim.render_conveyor)


def at_height(img: np.ndarray, height: int) -> np.ndarray:
    return cv2.resize(img, (round(img.shape[1] * height / img.shape[0]), height), interpolation=cv2.INTER_AREA)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="student checkpoint (default: the shipped model)")
    p.add_argument("--split", type=Path, default=Path("training/splits/trashnet_seed0.json"))
    args = p.parse_args()
    clf = load_model(ClassifySettings(model_path=args.model))  # type: ignore[arg-type]
    split = json.loads(args.split.read_text())
    root, names = Path(split["root"]), split["class_names"]
    images = [cv2.imread(str(root / rel), cv2.IMREAD_COLOR) for rel, _ in split["val"]]
    truth = [names[label] for _, label in split["val"]]

    def accuracy(view: Callable[[np.ndarray], np.ndarray]) -> float:
        right = 0
        for i in range(0, len(images), 64):
            predictions = clf.predict([view(im) for im in images[i : i + 64]])
            right += sum(pr.label == t for pr, t in zip(predictions, truth[i : i + 64]))
        return round(right / len(images), 4)

    small = lambda im: at_height(im, BELT_ITEM_PX)  # noqa: E731
    print(json.dumps({
        "photos": len(images),
        "as they are": accuracy(lambda im: im),
        f"at {BELT_ITEM_PX} px": accuracy(small),
        f"at {BELT_ITEM_PX} px, JPEG 90": accuracy(lambda im: jpeg(small(im), 90)),
        f"at {BELT_ITEM_PX} px, JPEG 75": accuracy(lambda im: jpeg(small(im), 75)),
    }))


if __name__ == "__main__":
    main()
