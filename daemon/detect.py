"""Finds items on the belt: difference against a slowly-updated image of the empty belt.

The belt region is compared with a background model (the first frame or a
photo of the empty belt, then a running average updated only where no item
is), thresholded, cleaned with morphology and split into contours. Blobs closer
than ``merge_gap_px`` are joined: an item partly coloured like the belt falls
apart into pieces. Working buffers are allocated once per frame size, not per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from daemon.settings import DetectSettings


@dataclass(frozen=True)
class Detection:
    """One blob in belt-region pixel coordinates (items move towards +x)."""

    x: int
    y: int
    w: int
    h: int
    area: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2.0

    @property
    def cy(self) -> float:
        return self.y + self.h / 2.0


@dataclass
class _Buffers:
    """Per-frame-size working images, reused every frame through OpenCV's ``dst=`` arguments."""

    gray: np.ndarray
    smooth: np.ndarray
    background_u8: np.ndarray
    diff: np.ndarray
    mask: np.ndarray
    mask_wide: np.ndarray
    background: np.ndarray  # float32 running average of the empty belt

    @classmethod
    def for_shape(cls, h: int, w: int, background: np.ndarray) -> _Buffers:
        def u8() -> np.ndarray:
            return np.empty((h, w), np.uint8)

        return cls(u8(), u8(), u8(), u8(), u8(), u8(), background.astype(np.float32))


class BeltDetector:
    """Foreground blobs of one belt region; call detect() once per frame in capture order."""

    def __init__(self, settings: DetectSettings) -> None:
        self._s = settings
        k = settings.morph_px
        self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
        self._blur = (settings.blur_px | 1, settings.blur_px | 1)  # odd kernel size
        self._buf: _Buffers | None = None
        self._empty_belt: np.ndarray | None = None
        if settings.background_image is not None:
            self._empty_belt = self._load_background(settings.background_image)

    @staticmethod
    def _load_background(path: Path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"detect.background_image cannot be read: {path}")
        return img

    def _start(self, region_bgr: np.ndarray) -> _Buffers:
        """Buffers for a new frame size; the background is the empty-belt photo, else this frame."""
        h, w = region_bgr.shape[:2]
        if self._empty_belt is not None and self._empty_belt.shape == (h, w):
            base = self._empty_belt
        else:
            base = cv2.cvtColor(region_bgr, cv2.COLOR_BGR2GRAY)
        return _Buffers.for_shape(h, w, cv2.GaussianBlur(base, self._blur, 0))

    def detect(self, region_bgr: np.ndarray) -> list[Detection]:
        b = self._buf
        if b is None or b.gray.shape != region_bgr.shape[:2]:
            b = self._buf = self._start(region_bgr)
        cv2.cvtColor(region_bgr, cv2.COLOR_BGR2GRAY, dst=b.gray)
        cv2.GaussianBlur(b.gray, self._blur, 0, dst=b.smooth)
        cv2.convertScaleAbs(b.background, dst=b.background_u8)
        cv2.absdiff(b.smooth, b.background_u8, dst=b.diff)
        cv2.threshold(b.diff, self._s.diff_threshold, 255, cv2.THRESH_BINARY, dst=b.mask)
        cv2.morphologyEx(b.mask, cv2.MORPH_OPEN, self._kernel, dst=b.mask)
        cv2.morphologyEx(b.mask, cv2.MORPH_CLOSE, self._kernel, dst=b.mask, iterations=2)
        contours, _ = cv2.findContours(b.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        pieces = []
        for c in contours:
            area = cv2.contourArea(c)
            if area < self._s.min_area_px:
                continue
            x, y, w, h = cv2.boundingRect(c)
            pieces.append(Detection(int(x), int(y), int(w), int(h), float(area)))
        self._learn(b)
        return merge_close(pieces, self._s.merge_gap_px)

    def _learn(self, b: _Buffers) -> None:
        if self._s.background_alpha > 0:
            # Follow lighting drift where there is no item (a grown mask keeps item halos out).
            cv2.dilate(b.mask, self._kernel, dst=b.mask_wide, iterations=2)
            cv2.bitwise_not(b.mask_wide, dst=b.mask_wide)
            cv2.accumulateWeighted(b.smooth, b.background, self._s.background_alpha, mask=b.mask_wide)
        if self._s.background_alpha_item > 0:
            # Everywhere, very slowly: an item lying in the first frame (a "ghost" once it leaves) or an
            # object stuck on the belt fades into the background instead of being detected forever.
            cv2.accumulateWeighted(b.smooth, b.background, self._s.background_alpha_item)


def _gap(a: Detection, b: Detection) -> int:
    """Distance between two boxes: the larger of the x and y gaps (0 when they touch or overlap)."""
    return max(max(a.x, b.x) - min(a.x + a.w, b.x + b.w), max(a.y, b.y) - min(a.y + a.h, b.y + b.h), 0)


def merge_close(boxes: list[Detection], gap_px: int) -> list[Detection]:
    """Join boxes closer than ``gap_px`` (transitively) into one box with the summed area."""
    if gap_px <= 0 or len(boxes) < 2:
        return boxes
    groups = [[b] for b in boxes]
    merged = True
    while merged:  # few blobs per frame: the quadratic pass is cheap
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if any(_gap(a, b) < gap_px for a in groups[i] for b in groups[j]):
                    groups[i] += groups.pop(j)
                    merged = True
                    break
            if merged:
                break
    out = []
    for g in groups:
        x0, y0 = min(d.x for d in g), min(d.y for d in g)
        x1, y1 = max(d.x + d.w for d in g), max(d.y + d.h for d in g)
        out.append(Detection(x0, y0, x1 - x0, y1 - y0, sum(d.area for d in g)))
    return out
