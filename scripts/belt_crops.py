"""Where the belt's crop loses accuracy. Photos of a split are put on the simulated belt; the daemon's
detector and tracker (default settings) hand out one crop per item, and the daemon's classifier labels
each item several ways: from the pipeline's crop (as the daemon does, and enlarged bilinearly instead
of bicubically), from the item's true box cut out of the same decoded frame, from the belt-size sprite
before the video writer, and from the photo as it is. Each way is scored against the labels and,
without labels, against the model's own output on the photo (agreement and mean KL divergence), so
that the training photos can be used to choose a crop without touching the validation photos.
Prints one JSON object; ``--per-item FILE`` also writes one line per item.

    .venv/bin/python scripts/belt_crops.py [--part val|train] [--limit N] [--textured] [--model CHECKPOINT]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from bench.views import belt_photos
from daemon.classify import load_model
from daemon.conveyor_sim import BeltStyle, SimItem, SimVideo, render_conveyor
from daemon.detect import BeltDetector, Detection
from daemon.settings import ClassifySettings, load_settings
from daemon.track import BeltTracker, ReadyItem
from training.evaluate import is_teacher_checkpoint, teacher_classifier


def true_box(video: SimVideo, item: SimItem, frame: int) -> Detection:
    left = round(item.center_x(frame / video.fps, video.speed_px_s) - item.w / 2)
    return Detection(left, item.y, item.w, item.h, float(item.w * item.h))


def iou(a: Detection, b: Detection) -> float:
    inter = BeltTracker._overlap(a, b)
    return inter / (a.w * a.h + b.w * b.h - inter)


def cut(region: np.ndarray, d: Detection) -> np.ndarray:
    h, w = region.shape[:2]
    return region[max(0, d.y) : min(h, d.y + d.h), max(0, d.x) : min(w, d.x + d.w)].copy()


def split_photos(split_file: Path, part: str, limit: int) -> list[tuple[str, Path]]:
    """(label, photo) of one part of a split; a fixed random subset of ``limit`` photos when limit > 0."""
    photos = belt_photos(split_file, part)
    if limit > 0:
        random.Random(1).shuffle(photos)
        photos = photos[:limit]
    return photos


def handed_out(video: SimVideo, padding: int = 0, views: int = 1, spacing_px: float = 0.0) -> list[tuple[ReadyItem, np.ndarray]]:
    """Run the daemon's detector and tracker (default settings, the demo's belt) over the video: the
    items handed out for classification, each with the decoded frame it was handed out in."""
    s = load_settings(None, belt={"region": [0, 0, video.width, video.height], "speed_mm_s": video.speed_px_s, "px_per_mm": 1.0})
    detector = BeltDetector(s.detect)
    tracker = BeltTracker(s.track, speed_px_s=video.speed_px_s, region_width=video.width,
                          edge_margin_px=s.detect.edge_margin_px, crop_padding_px=padding, views=views,
                          view_spacing_px=spacing_px)
    cap = cv2.VideoCapture(str(video.path))
    out: list[tuple[ReadyItem, np.ndarray]] = []
    k = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        for r in tracker.update(detector.detect(frame), k / video.fps, k, frame):
            out.append((r, frame.copy()))
        k += 1
    cap.release()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="student checkpoint (default: the shipped model), or a teacher checkpoint")
    p.add_argument("--split", type=Path, default=Path("training/splits/trashnet_seed0.json"))
    p.add_argument("--part", choices=("val", "train"), default="val", help="which photos of the split go on the belt")
    p.add_argument("--limit", type=int, default=0, help="at most this many photos (a fixed random subset; 0: all)")
    p.add_argument("--padding", type=int, default=ClassifySettings.model_fields["crop_padding_px"].default,
                   help="classify.crop_padding_px")
    p.add_argument("--textured", action="store_true", help="a harder belt: blotchy texture, light drifting by +-12%%")
    p.add_argument("--per-item", type=Path, default=None, help="write one JSON line per item here")
    args = p.parse_args()
    if args.model is not None and is_teacher_checkpoint(args.model):  # the fine-tuned teacher on the same belt
        clf: Any = teacher_classifier(args.model)
    else:
        clf = load_model(ClassifySettings(model_path=args.model))  # type: ignore[arg-type]
    photos = split_photos(args.split, args.part, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        style = BeltStyle(texture=12, drift=0.12) if args.textured else BeltStyle()
        video = render_conveyor(Path(tmp) / "belt.avi", photos, len(photos), seed=3 if args.part == "train" else 0, style=style)
        ready = handed_out(video, args.padding)
    by_source = {(label, path.name): path for label, path in photos}
    items = []
    for r, frame in ready:
        item = video.item_at(r.frame_index, r.det.cx, tolerance_px=60)
        if item is None:
            raise SystemExit(f"item {r.track_id} handed out at frame {r.frame_index} matches no photo on the belt")
        items.append((r, frame, item, cv2.imread(str(by_source[(item.label, item.source)]), cv2.IMREAD_COLOR)))
    size = (clf.preprocess.width, clf.preprocess.height)
    ways: dict[str, Callable[[ReadyItem, np.ndarray, SimItem, np.ndarray], np.ndarray]] = {
        "photo": lambda r, f, it, ph: ph,
        "pipeline crop": lambda r, f, it, ph: r.crop,
        "pipeline crop, bilinear": lambda r, f, it, ph: cv2.resize(r.crop, size, interpolation=cv2.INTER_LINEAR),
        "true box": lambda r, f, it, ph: cut(f, true_box(video, it, r.frame_index)),
        "sprite, before the video writer": lambda r, f, it, ph: cv2.resize(ph, (it.w, it.h), interpolation=cv2.INTER_AREA),
    }
    labels = np.array([clf.class_names.index(it.label) for _, _, it, _ in items])
    logp: dict[str, np.ndarray] = {}
    for name, way in ways.items():
        rows = []
        for start in range(0, len(items), 64):
            preds = clf.predict([way(*x) for x in items[start : start + 64]])
            rows += [[p.scores[c] for c in clf.class_names] for p in preds]
        logp[name] = np.log(np.asarray(rows) + 1e-9)
    ref = logp["photo"]
    scored = {name: {"accuracy": round(float((lp.argmax(1) == labels).mean()), 4),
                     "agrees_with_photo": round(float((lp.argmax(1) == ref.argmax(1)).mean()), 4),
                     "kl_from_photo": round(float((np.exp(ref) * (ref - lp)).sum(1).mean()), 4)} for name, lp in logp.items()}
    ious = np.array([iou(r.det, true_box(video, it, r.frame_index)) for r, _, it, _ in items])
    found = sorted(it.index for _, _, it, _ in items)
    summary = {
        "photos": len(photos), "part": args.part, "textured": args.textured, "padding_px": args.padding, "handed_out": len(items),
        "items_decided_twice": len(found) - len(set(found)), "items_never_decided": len(photos) - len(set(found)),
        "partial": sum(r.partial for r, _, _, _ in items),
        "box_iou": {"mean": round(float(ious.mean()), 3), "below_0.9": int((ious < 0.9).sum())},
        "ways": scored,
    }
    if args.per_item:
        args.per_item.write_text("".join(
            json.dumps({"id": r.track_id, "source": it.source, "label": it.label, "iou": round(float(o), 3),
                        **{name: clf.class_names[int(logp[name][i].argmax())] for name in ways}}) + "\n"
            for i, ((r, _, it, _), o) in enumerate(zip(items, ious))))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
