"""The belt augmentation on a real photo: size and dtype kept, the belt margin really appears."""

from __future__ import annotations

import cv2
import torch

from conftest import SAMPLES
from model.preprocess import PreprocessConfig, resize_to_rgb
from training.augment import BELT_FILL, belt_augmentation, belt_margin


def _photo() -> torch.Tensor:
    bgr = cv2.imread(str(sorted((SAMPLES / "paper").iterdir())[0]))
    rgb = resize_to_rgb(bgr, PreprocessConfig(height=128, width=96))
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def test_augmentation_keeps_size_and_dtype_and_varies() -> None:
    torch.manual_seed(0)
    x = _photo()
    aug = belt_augmentation(128, 96)
    outs = [aug(x) for _ in range(30)]
    assert all(o.shape == (3, 128, 96) and o.dtype == torch.uint8 for o in outs)
    assert sum(not torch.equal(o, x) for o in outs) == len(outs)


def test_belt_margin_surrounds_the_photo_with_belt_grey() -> None:
    torch.manual_seed(1)
    x = _photo()
    assert int((x == BELT_FILL).all(0).sum()) == 0 or float((x == BELT_FILL).all(0).float().mean()) < 0.01
    grown = 0
    for _ in range(20):
        o = belt_margin(1.0)(x)
        h, w = o.shape[1:]
        assert h >= 128 and w >= 96 and h <= 128 * 1.3 + 1 and w <= 96 * 1.3 + 1
        if (h, w) != (128, 96):
            grown += 1
            belt = (o == BELT_FILL).all(0)
            assert int(belt.sum()) >= h * w - 128 * 96  # every added pixel is belt grey
    assert grown >= 15
    assert torch.equal(belt_margin(0.0)(x), x)
