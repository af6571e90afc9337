"""Cut each item out of its photo once (OpenCV GrabCut), so training can put it on other backdrops.

TrashNet items stand on a plain light board; a model trained on them learns the board too.
The mask is found at a reduced size from a seed: pixels far (in Lab) from the colour of the
photo's border are probably item, the border itself is surely backdrop. Masks are stored as
PNGs next to a manifest, keyed by the image's path, so a run computes them once.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)
WORK_SIDE = 128  # GrabCut runs at this longer side: masks are soft-edged anyway, and it is 10x faster
BORDER = 3  # pixels of the working image taken as sure backdrop
MAX_BORDER_SPREAD = 30.0  # Lab distance: a border this mixed is item, not board


def item_mask(bgr: np.ndarray, iterations: int = 4) -> np.ndarray:
    """uint8 mask (255 = item) at the photo's size. Falls back to the whole frame if no item is found."""
    h, w = bgr.shape[:2]
    scale = WORK_SIDE / max(h, w)
    small = cv2.resize(bgr, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB).astype(np.float32)
    border = np.concatenate([lab[:BORDER].reshape(-1, 3), lab[-BORDER:].reshape(-1, 3), lab[:, :BORDER].reshape(-1, 3), lab[:, -BORDER:].reshape(-1, 3)])
    backdrop = np.median(border, axis=0)
    dist = np.linalg.norm(lab - backdrop, axis=2)
    spread = float(np.percentile(np.linalg.norm(border - backdrop, axis=1), 90)) + 1.0
    if spread > MAX_BORDER_SPREAD:  # the item runs off the photo: no board to learn, keep it whole
        return np.full((h, w), 255, np.uint8)
    seed = np.full(dist.shape, cv2.GC_PR_BGD, np.uint8)
    # vignetting widens the border's spread; the caps keep faint items on a shaded board findable
    seed[dist > min(2.0 * spread, 20.0)] = cv2.GC_PR_FGD
    seed[dist > min(4.0 * spread, 40.0)] = cv2.GC_FGD
    seed[:BORDER], seed[-BORDER:], seed[:, :BORDER], seed[:, -BORDER:] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
    if not np.any((seed == cv2.GC_PR_FGD) | (seed == cv2.GC_FGD)):
        return np.full((h, w), 255, np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(small, seed, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return np.full((h, w), 255, np.uint8)
    fg = np.where((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    fg = _largest_components(cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)))
    if fg.mean() < 255 * 0.02:  # nothing sensible found: keep the photo whole rather than an empty cut-out
        return np.full((h, w), 255, np.uint8)
    return cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)


def _largest_components(mask: np.ndarray, keep_fraction: float = 0.1) -> np.ndarray:
    """Drop specks: keep the components at least keep_fraction the size of the largest one."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= keep_fraction * areas.max()) + 1
    return np.where(np.isin(labels, keep), 255, 0).astype(np.uint8)


class MaskStore:
    """Masks on disk, one PNG per image, named by a hash of the image path (computed on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, image_path: str) -> Path:
        return self.folder / (hashlib.sha1(str(Path(image_path).resolve()).encode()).hexdigest()[:16] + ".png")

    def get(self, image_path: str, bgr: np.ndarray) -> np.ndarray:
        path = self.path_for(image_path)
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
        if mask is None or mask.shape != bgr.shape[:2]:
            mask = item_mask(bgr)
            tmp = path.with_name(path.stem + ".tmp.png")
            cv2.imwrite(str(tmp), mask)
            tmp.replace(path)
        return mask


__all__ = ["MaskStore", "item_mask"]
