"""Belt accuracy and latency against the number of views per decision (``classify.views``).

Each setting is one real-time demo run on the same rendered belt; the reference is the
same photos classified directly, which the belt should come close to.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import cv2
import numpy as np

if TYPE_CHECKING:
    from model.inference import Classifier

Samples = list[tuple[str, Path]]


def belt_photos(source: Path | None, part: str = "val") -> Samples:
    """(label, photo) pairs to put on the belt: the bundled samples (None), an ImageFolder
    (one folder per class), or one part (default: the validation part) of a training split file
    (split.json), so that the belt is measured on photos no model was trained on, hundreds rather than 24."""
    from daemon.conveyor_sim import load_samples

    if source is None:
        return load_samples()
    if source.is_dir():
        return load_samples(source)
    if not source.is_file():
        raise FileNotFoundError(f"--photos {source}: no such folder or split file")
    try:
        split = json.loads(source.read_text())
        root, names = Path(split["root"]), split["class_names"]
        photos = [(names[label], root / rel) for rel, label in split[part]]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"--photos {source}: not a split file with root, class_names and {part} ({exc})") from exc
    missing = [str(p) for _, p in photos if not p.is_file()]
    if missing or not photos:
        raise FileNotFoundError(f"--photos {source}: {len(missing)} of {len(photos)} {part} photos are missing (first: {missing[:1]})")
    return photos


def accuracy_on(clf: Classifier, samples: Samples, view: Callable[[np.ndarray], np.ndarray] = lambda im: im, batch: int = 64) -> float:
    """Share of `samples` whose photo, passed through `view` (e.g. made smaller or compressed), the
    classifier labels right; read and classified a batch at a time."""
    correct = 0
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        predictions = clf.predict([view(cv2.imread(str(path), cv2.IMREAD_COLOR)) for _, path in chunk])
        correct += sum(p.label == label for p, (label, _) in zip(predictions, chunk))
    return round(correct / len(samples), 4)


def direct_accuracy(model: Path | None, backend: str, samples: Samples) -> dict[str, Any]:
    """The belt's photos classified as they are: what the belt pipeline is measured against."""
    from daemon.classify import load_model
    from daemon.settings import ClassifySettings

    clf = load_model(ClassifySettings(model_path=model, backend=backend))  # type: ignore[arg-type]
    return {"photos": len(samples), "accuracy": accuracy_on(clf, samples)}


def run_views_bench(
    items: int, model: Path | None, backend: str, views: list[int], spacing_mm: float, max_wait_ms: float,
    realtime: bool = True, paddings: list[int] | None = None, photos: Path | None = None,
) -> dict[str, Any]:
    """One demo run per (crop padding, number of views): accuracy, items sent to reject,
    capture->decision latency and inference time."""
    from daemon.demo import DemoOptions, run_demo

    samples = belt_photos(photos)
    items = items or len(samples)
    rows = []
    for pad in paddings or [0]:
        for n in views:
            opts = DemoOptions(items=items, realtime=realtime, json=True, model=model, backend=backend, mqtt=False,
                               views=n, view_spacing_mm=spacing_mm, max_view_wait_ms=max_wait_ms, crop_padding_px=pad,
                               samples=tuple(samples))
            r = run_demo(opts, out=io.StringIO())
            rows.append({"views": n, "crop_padding_px": pad, **{k: r[k] for k in ("items", "accuracy", "rejected", "latency_p50_ms", "latency_p99_ms",
                                                                                  "inference_p95_ms", "dropped_frames")}})
    return {"items": items, "backend": backend, "view_spacing_mm": spacing_mm, "max_view_wait_ms": max_wait_ms,
            "mode": "realtime-30fps" if realtime else "as-fast-as-possible",
            "photos": str(photos) if photos else "bundled samples", "direct": direct_accuracy(model, backend, samples), "runs": rows}
