"""The one preprocessing path shared by inference (daemon) and training's evaluation.

Input: BGR uint8 images as OpenCV returns them, any size. Output: float32
(B, 3, H, W) arrays normalised with the checkpoint's mean/std. The policy is
stored in every checkpoint, so a model always sees what it was trained on.
Training augments between `resize_to_rgb` and `normalize`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's (x - 127) / 128 on 0..255 pixels, as mean/std on 0..1
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the network input. `resize`: 'stretch' or 'letterbox' (pad to keep aspect)."""

    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: Literal["stretch", "letterbox"] = "stretch"

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"preprocess size must be positive, got {self.height}x{self.width}")
        if self.resize not in ("stretch", "letterbox"):
            raise ValueError(f"resize must be 'stretch' or 'letterbox', got {self.resize!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        return cls(
            height=int(d["height"]),
            width=int(d["width"]),
            mean=tuple(d.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
            std=tuple(d.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
            resize=d.get("resize", "stretch"),
        )


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")


# A belt crop is usually smaller than the network input, while training views are cut from larger photos
# and only ever shrunk. Bicubic enlarging keeps more of the edges than bilinear: on 800 training photos
# put on the simulated belt, the model's output on the crop moved closer to its output on the photo
# (mean KL 0.177 -> 0.123; scripts/belt_crops.py, docs/results.md).
UPSCALE = cv2.INTER_CUBIC


def resize_to_rgb(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """BGR (any size, gray/BGRA accepted) -> RGB uint8 (H, W, 3) at the model's input size."""
    bgr = _as_bgr(image)
    h, w = bgr.shape[:2]
    if cfg.resize == "stretch":
        interp = cv2.INTER_AREA if (h > cfg.height or w > cfg.width) else UPSCALE
        out = cv2.resize(bgr, (cfg.width, cfg.height), interpolation=interp)
    else:
        scale = min(cfg.height / h, cfg.width / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else UPSCALE
        resized = cv2.resize(bgr, (nw, nh), interpolation=interp)
        out = np.zeros((cfg.height, cfg.width, 3), np.uint8)
        top, left = (cfg.height - nh) // 2, (cfg.width - nw) // 2
        out[top : top + nh, left : left + nw] = resized
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def normalize(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """RGB uint8 (B, H, W, 3) or (H, W, 3) -> float32 (B, 3, H, W), mean/std normalised."""
    batch = rgb[None] if rgb.ndim == 3 else rgb
    x = batch.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(cfg.mean, np.float32)
    x /= np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess_bgr(images: Sequence[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """The evaluation transform: a list of BGR images -> one float32 (B, 3, H, W) batch."""
    if len(images) == 0:
        return np.zeros((0, 3, cfg.height, cfg.width), np.float32)
    return normalize(np.stack([resize_to_rgb(im, cfg) for im in images]), cfg)
