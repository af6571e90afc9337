"""Belt accuracy and latency against the number of views per decision (``classify.views``).

Each setting is one real-time demo run on the same rendered belt; the reference is the
same photos classified directly, which the belt should come close to.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2


def direct_accuracy(model: Path | None, backend: str) -> dict[str, Any]:
    """The bundled sample photos classified as they are: what the belt pipeline is measured against."""
    from daemon.classify import load_model
    from daemon.conveyor_sim import load_samples
    from daemon.settings import ClassifySettings

    clf = load_model(ClassifySettings(model_path=model, backend=backend))  # type: ignore[arg-type]
    samples = load_samples()
    predictions = clf.predict([cv2.imread(str(path), cv2.IMREAD_COLOR) for _, path in samples])
    correct = sum(p.label == label for p, (label, _) in zip(predictions, samples))
    return {"photos": len(samples), "accuracy": round(correct / len(samples), 4)}


def run_views_bench(
    items: int, model: Path | None, backend: str, views: list[int], spacing_mm: float, max_wait_ms: float,
    realtime: bool = True, paddings: list[int] | None = None,
) -> dict[str, Any]:
    """One demo run per (crop padding, number of views): accuracy, items sent to reject,
    capture->decision latency and inference time."""
    from daemon.demo import DemoOptions, run_demo

    rows = []
    for pad in paddings or [0]:
        for n in views:
            opts = DemoOptions(items=items, realtime=realtime, json=True, model=model, backend=backend, mqtt=False,
                               views=n, view_spacing_mm=spacing_mm, max_view_wait_ms=max_wait_ms, crop_padding_px=pad)
            r = run_demo(opts, out=io.StringIO())
            rows.append({"views": n, "crop_padding_px": pad, **{k: r[k] for k in ("items", "accuracy", "rejected", "latency_p50_ms", "latency_p99_ms",
                                                                                  "inference_p95_ms", "dropped_frames")}})
    return {"items": items, "backend": backend, "view_spacing_mm": spacing_mm, "max_view_wait_ms": max_wait_ms,
            "mode": "realtime-30fps" if realtime else "as-fast-as-possible",
            "direct": direct_accuracy(model, backend), "runs": rows}
