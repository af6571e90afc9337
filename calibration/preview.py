"""An optional preview window that degrades to a clear message when there is no GUI.

Technicians often work over SSH without a display, and the installed OpenCV is the
headless build: both cases must leave the calibration fully usable.
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

WINDOW = "wastesort calibrate"


def gui_unavailable_reason() -> str | None:
    """Why no window can be shown here, or None when one can."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set, e.g. over SSH without -X)"
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        return "this OpenCV build has no GUI support (opencv-python-headless); install opencv-python for a preview"
    return None


class Preview:
    """Shows images when asked and possible; otherwise says once why not and does nothing."""

    def __init__(self, wanted: bool) -> None:
        self.reason = gui_unavailable_reason() if wanted else "not requested (--preview)"
        self.available = wanted and self.reason is None
        if wanted and not self.available:
            print(f"note: preview disabled: {self.reason}; continuing headless", file=sys.stderr)

    def show(self, image: np.ndarray, wait_ms: int = 1) -> int:
        """Display ``image``; return the key pressed (-1 for none or when headless)."""
        if not self.available:
            return -1
        cv2.imshow(WINDOW, image)
        return int(cv2.waitKey(wait_ms))

    def select_region(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """Let the technician drag a rectangle; None when headless or cancelled."""
        if not self.available:
            return None
        x, y, w, h = (int(v) for v in cv2.selectROI(WINDOW, image, showCrosshair=True, fromCenter=False))
        return (x, y, w, h) if w > 0 and h > 0 else None

    def close(self) -> None:
        if self.available:
            cv2.destroyWindow(WINDOW)
