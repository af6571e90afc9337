"""Finds items on the belt: difference against a slowly-updated image of the empty belt.

The belt region is compared with a background model (the first frame or a
photo of the empty belt, then a running average updated only where no item
is), thresholded, cleaned with morphology and split into contours. Working
buffers are allocated once per frame size, not per frame.
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


class BeltDetector:
    """Foreground blobs of one belt region; call detect() once per frame in capture order."""

    def __init__(self, settings: DetectSettings) -> None:
        self._s = settings
        k = settings.morph_px
        self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
        self._blur = settings.blur_px | 1  # odd kernel size
        self._background: np.ndarray | None = None  # float32, running average
        self._shape: tuple[int, int] | None = None
        self._gray = self._smooth = self._bg_u8 = self._diff = self._mask = self._mask_wide = None
        if settings.background_image is not None:
            self._background_image: np.ndarray | None = self._load_background(settings.background_image)
        else:
            self._background_image = None

    @staticmethod
    def _load_background(path: Path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"detect.background_image cannot be read: {path}")
        return img

    def _allocate(self, h: int, w: int, first_gray: np.ndarray) -> None:
        self._shape = (h, w)
        self._gray = np.empty((h, w), np.uint8)
        self._smooth = np.empty((h, w), np.uint8)
        self._bg_u8 = np.empty((h, w), np.uint8)
        self._diff = np.empty((h, w), np.uint8)
        self._mask = np.empty((h, w), np.uint8)
        self._mask_wide = np.empty((h, w), np.uint8)
        if self._background_image is not None and self._background_image.shape == (h, w):
            base = cv2.GaussianBlur(self._background_image, (self._blur, self._blur), 0)
        else:
            base = first_gray
        self._background = base.astype(np.float32)

    def detect(self, region_bgr: np.ndarray) -> list[Detection]:
        h, w = region_bgr.shape[:2]
        cv2.cvtColor(region_bgr, cv2.COLOR_BGR2GRAY, dst=self._gray if self._shape == (h, w) else None)
        if self._shape != (h, w):
            gray = cv2.cvtColor(region_bgr, cv2.COLOR_BGR2GRAY)
            smooth = cv2.GaussianBlur(gray, (self._blur, self._blur), 0)
            self._allocate(h, w, smooth)
            np.copyto(self._gray, gray)
        assert self._background is not None
        cv2.GaussianBlur(self._gray, (self._blur, self._blur), 0, dst=self._smooth)
        cv2.convertScaleAbs(self._background, dst=self._bg_u8)
        cv2.absdiff(self._smooth, self._bg_u8, dst=self._diff)
        cv2.threshold(self._diff, self._s.diff_threshold, 255, cv2.THRESH_BINARY, dst=self._mask)
        cv2.morphologyEx(self._mask, cv2.MORPH_OPEN, self._kernel, dst=self._mask)
        cv2.morphologyEx(self._mask, cv2.MORPH_CLOSE, self._kernel, dst=self._mask, iterations=2)
        contours, _ = cv2.findContours(self._mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        detections = []
        for c in contours:
            area = cv2.contourArea(c)
            if area < self._s.min_area_px:
                continue
            x, y, bw, bh = cv2.boundingRect(c)
            detections.append(Detection(int(x), int(y), int(bw), int(bh), float(area)))
        if self._s.background_alpha > 0:
            # Learn lighting drift only where there is no item (grown mask keeps item halos out).
            cv2.dilate(self._mask, self._kernel, dst=self._mask_wide, iterations=2)
            cv2.bitwise_not(self._mask_wide, dst=self._mask_wide)
            cv2.accumulateWeighted(self._smooth, self._background, self._s.background_alpha, mask=self._mask_wide)
        if self._s.background_alpha_item > 0:
            # Everywhere, very slowly: an item lying in the first frame (a "ghost" once it leaves) or an
            # object stuck on the belt fades into the background instead of being detected forever.
            cv2.accumulateWeighted(self._smooth, self._background, self._s.background_alpha_item)
        return detections
