"""The belt augmentation on a real photo: size and dtype kept, and the belt margin really appears."""

from __future__ import annotations

import cv2
import torch

from model.preprocess import PreprocessConfig, resize_to_rgb
from training.augment import BELT_FILL, belt_augmentation

from conftest import SAMPLES


def _photo() -> torch.Tensor:
    bgr = cv2.imread(str(sorted((SAMPLES / "paper").iterdir())[0]))
    rgb = resize_to_rgb(bgr, PreprocessConfig(height=128, width=96))
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def test_shape_dtype_and_belt_margin() -> None:
    torch.manual_seed(0)
    x = _photo()
    aug = belt_augmentation(128, 96)
    outs = [aug(x) for _ in range(60)]
    assert all(o.shape == (3, 128, 96) and o.dtype == torch.uint8 for o in outs)
    # TrashNet photos are bright; a belt-coloured band along an edge only comes from the zoom-out/rotation fill.
    def dark_edge(o: torch.Tensor) -> bool:
        g = o.float().mean(0)
        edges = torch.cat([g[0], g[-1], g[:, 0], g[:, -1]])
        return bool((edges < BELT_FILL + 40).float().mean() > 0.5)

    assert float((x.float().mean(0)[[0, -1]] < BELT_FILL + 40).float().mean()) < 0.1  # the photo itself has no dark edge
    share = sum(dark_edge(o) for o in outs) / len(outs)
    assert 0.1 < share < 0.9
    assert any(not torch.equal(o, x) for o in outs)


def test_strength_zero_adds_no_margin() -> None:
    torch.manual_seed(1)
    x = _photo()
    aug = belt_augmentation(128, 96, strength=0.0)
    for _ in range(20):
        g = aug(x).float().mean(0)
        assert float((torch.cat([g[0], g[-1]]) < BELT_FILL + 20).float().mean()) < 0.2
