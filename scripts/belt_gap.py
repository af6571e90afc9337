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

import cv2
import numpy as np

from bench.views import accuracy_on, belt_photos
from daemon.classify import load_model
from daemon.settings import ClassifySettings
from training.camera_degrade import jpeg_round_trip as jpeg

BELT_ITEM_PX = 112  # the demo belt's item height (daemon.conveyor_sim.render_conveyor)


def at_belt_size(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (round(img.shape[1] * BELT_ITEM_PX / img.shape[0]), BELT_ITEM_PX), interpolation=cv2.INTER_AREA)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="student checkpoint (default: the shipped model)")
    p.add_argument("--split", type=Path, default=Path("training/splits/trashnet_seed0.json"))
    args = p.parse_args()
    clf = load_model(ClassifySettings(model_path=args.model))  # type: ignore[arg-type]
    photos = belt_photos(args.split)
    print(json.dumps({
        "photos": len(photos),
        "as they are": accuracy_on(clf, photos),
        f"at {BELT_ITEM_PX} px": accuracy_on(clf, photos, at_belt_size),
        f"at {BELT_ITEM_PX} px, JPEG 90": accuracy_on(clf, photos, lambda im: jpeg(at_belt_size(im), 90)),
        f"at {BELT_ITEM_PX} px, JPEG 75": accuracy_on(clf, photos, lambda im: jpeg(at_belt_size(im), 75)),
    }))


if __name__ == "__main__":
    main()
