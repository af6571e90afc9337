"""What a belt camera does to an item that TrashNet's photos do not show: fewer pixels on the item
and lossy compression (MJPG and H.264 streams, JPEG snapshots).

Measured on the 24 bundled sample photos with the shipped model of 2026-12-02 (second): at the
demo belt's size (112 px high) the photos score 0.958; the same pixels JPEG-compressed at quality
95 / 85 / 75 / 50 score 0.917 / 0.875 / 0.792 / 0.667, and the demo belt (an MJPG video) scores
0.833. The student is taught on such degraded inputs while its teacher's targets stay those of
the clean view ("a good teacher sees the clean view"), so it learns to read the material through
the artefacts.

Every degradation is a pure function of the view and an integer seed, so stored stem outputs of
degraded views (teacher-cache --camera-degrade) are reproducible like the views themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .views import seed_for

VAL_CAMERA_SEED = 4242  # the fixed degradation of each validation photo (val_camera_acc)


@dataclass(frozen=True)
class CameraDegradation:
    """Downscale by a random factor, JPEG-encode at a random quality, scale back (RGB uint8 in and out)."""

    p: float = 0.5  # share of views degraded
    scale: tuple[float, float] = (0.35, 1.0)  # the item's resolution against the rendered view
    quality: tuple[int, int] = (30, 95)  # JPEG quality range

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"degradation share must be in [0, 1], got {self.p}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale range must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 1 <= self.quality[0] <= self.quality[1] <= 100:
            raise ValueError(f"JPEG quality range must satisfy 1 <= low <= high <= 100, got {self.quality}")

    def apply(self, rgb: np.ndarray, seed: int) -> np.ndarray:
        """The view as the camera would deliver it (or unchanged, for a share 1 - p of seeds)."""
        rng = np.random.default_rng([seed, 0xCA])  # its own stream: the view's own draws stay as they were
        if rng.random() >= self.p:
            return rgb
        return degrade(rgb, float(rng.uniform(*self.scale)), int(rng.integers(self.quality[0], self.quality[1] + 1)))


def fixed_degradation(camera: CameraDegradation, rgb: np.ndarray, base_seed: int, index: int) -> np.ndarray:
    """Photo `index` of a fixed evaluation set, degraded by its own seed: the one derivation that
    distill's val_camera_acc and `evaluate --camera` share, so the two figures stay the same."""
    return camera.apply(rgb, seed_for(base_seed, index, 0))


def jpeg_round_trip(bgr: np.ndarray, quality: int) -> np.ndarray:
    """`bgr` (OpenCV's channel order) as it comes back from JPEG compression at `quality`."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def degrade(rgb: np.ndarray, scale: float, quality: int) -> np.ndarray:
    """`rgb` downscaled by `scale`, JPEG-compressed at `quality`, and resized back to its size."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    small = cv2.cvtColor(jpeg_round_trip(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), quality), cv2.COLOR_BGR2RGB)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# the validation photos as a belt camera shows them: about the demo belt's item size, mid quality
VAL_CAMERA = CameraDegradation(p=1.0, scale=(0.45, 0.6), quality=(50, 80))

__all__ = ["CameraDegradation", "VAL_CAMERA", "VAL_CAMERA_SEED", "degrade", "fixed_degradation", "jpeg_round_trip"]
