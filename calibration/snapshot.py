"""A still of the camera with a pixel grid, the belt region and the gates drawn on it.

Over SSH there is no window to drag a region in: the technician copies this PNG off the
machine (scp), reads the coordinates from the grid and passes them as ``--region``.
"""

from __future__ import annotations

import cv2
import numpy as np

from calibration.camera import Region

GRID = (90, 90, 90)
LABEL = (255, 255, 255)
REGION = (0, 255, 0)
GATE = (0, 0, 255)
TRAVEL = {0: (1, 0), 180: (-1, 0), 90: (0, -1), 270: (0, 1)}  # image direction items move in


def gate_line(region: Region, rotate: int, offset_px: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """Image segment across the belt ``offset_px`` downstream of the region's upstream edge.

    Items travel left to right in the crop after ``belt.rotate`` (clockwise): in the camera image
    that is +x for 0, -x for 180, -y (upwards) for 90 and +y (downwards) for 270.
    """
    x, y, w, h = region
    d = int(round(offset_px))
    if rotate == 0:
        return (x + d, y), (x + d, y + h - 1)
    if rotate == 180:
        return (x + w - 1 - d, y), (x + w - 1 - d, y + h - 1)
    if rotate == 90:
        return (x, y + h - 1 - d), (x + w - 1, y + h - 1 - d)
    return (x, y + d), (x + w - 1, y + d)


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int]) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)


def draw_snapshot(
    image: np.ndarray, region: Region, rotate: int, gate_offsets_px: dict[int, float], grid_px: int = 50
) -> np.ndarray:
    """A copy of ``image`` with a labelled grid every ``grid_px``, the region (green) and each gate (red)."""
    out = image.copy()
    fh, fw = out.shape[:2]
    for gx in range(0, fw, grid_px):
        cv2.line(out, (gx, 0), (gx, fh - 1), GRID, 1)
        if gx % (2 * grid_px) == 0:
            _label(out, str(gx), (gx + 2, 12), LABEL)
    for gy in range(0, fh, grid_px):
        cv2.line(out, (0, gy), (fw - 1, gy), GRID, 1)
        if gy % (2 * grid_px) == 0 and gy > 0:
            _label(out, str(gy), (2, gy - 3), LABEL)
    x, y, w, h = region
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), REGION, 2)
    _label(out, f"belt.region {x},{y},{w},{h} (rotate {rotate})", (x + 4, y + 16), REGION)
    dx, dy = TRAVEL[rotate]
    centre = (x + w // 2, y + h // 2)
    cv2.arrowedLine(out, centre, (centre[0] + 40 * dx, centre[1] + 40 * dy), REGION, 2, tipLength=0.3)
    for gate, offset in sorted(gate_offsets_px.items()):
        p, q = gate_line(region, rotate, offset)
        cv2.line(out, p, q, GATE, 2)
        inside = 0 <= p[0] < fw and 0 <= p[1] < fh
        _label(out, f"gate {gate}" + ("" if inside else " (off image)"),
               (min(max(p[0] + 3, 0), fw - 60), min(max(p[1] + 14, 12), fh - 4)), GATE)
    return out
