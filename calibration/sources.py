"""Frames with timestamps from whatever the technician has: a camera, a video file, images."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from calibration.errors import CalibrationError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SourceKind = Literal["camera", "video", "images", "image"]


@dataclass(frozen=True)
class TimedFrame:
    """One BGR frame and its time in seconds since the first frame of the source."""

    index: int
    t_s: float
    image: np.ndarray


def source_kind(source: str) -> SourceKind:
    """Classify a ``camera.source``-style string the way the daemon does (index, device, URL, file, folder)."""
    p = Path(source)
    if source.isdigit() or source.startswith("/dev/") or "://" in source:
        return "camera"
    if p.is_dir():
        return "images"
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "video"


class FrameSource:
    """Iterate ``TimedFrame`` from a source; ``capture`` is the live cv2.VideoCapture (None for images)."""

    def __init__(self, source: str, folder_fps: float = 30.0) -> None:
        self.source = source
        self.kind: SourceKind = source_kind(source)
        self.folder_fps = folder_fps
        self.capture: cv2.VideoCapture | None = None
        self._files: list[Path] = []
        if self.kind in ("camera", "video"):
            if self.kind == "video" and not Path(source).is_file():
                raise CalibrationError(f"video file not found: {source}")
            self.capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
            if not self.capture.isOpened():
                raise CalibrationError(f"cannot open {self.kind} {source!r} (wrong index/path, or in use by the daemon?)")
        elif self.kind == "images":
            self._files = sorted(f for f in Path(source).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise CalibrationError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {source}")
        else:
            if not Path(source).is_file():
                raise CalibrationError(f"image not found: {source}")
            self._files = [Path(source)]

    @property
    def fps(self) -> float:
        """Nominal frame rate (0 when the source does not say)."""
        if self.capture is not None:
            return float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return self.folder_fps

    def frames(self, limit: int | None = None) -> Iterator[TimedFrame]:
        """Yield up to ``limit`` frames; video times come from the container, camera times from the clock."""
        if self.capture is None:
            for i, f in enumerate(self._files[:limit]):
                img = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if img is None:
                    raise CalibrationError(f"cannot read image {f}")
                yield TimedFrame(i, i / self.folder_fps, img)
            return
        fps = self.fps
        t0: float | None = None
        i = 0
        while limit is None or i < limit:
            ok, img = self.capture.read()
            if not ok or img is None:
                return
            if self.kind == "video":
                pos_ms = float(self.capture.get(cv2.CAP_PROP_POS_MSEC))
                # Some containers report 0 for every frame; fall back to the nominal rate.
                t = pos_ms / 1000.0 if (pos_ms > 0 or i == 0) else (i / fps if fps > 0 else float(i))
                if i > 0 and pos_ms <= 0 and fps <= 0:
                    raise CalibrationError(f"{self.source}: the video has neither timestamps nor a frame rate")
            else:
                t = time.monotonic()
            if t0 is None:
                t0 = t
            yield TimedFrame(i, t - t0, img)
            i += 1

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
