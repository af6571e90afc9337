"""Augmentation that fits a belt camera: any rotation, flips, lighting drift, a bit of zoom/blur,
and belt around the item (the daemon's crops carry a margin of belt; TrashNet photos do not)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

BELT_FILL = 60  # dark grey, like rubber belts (and the demo's simulated belt)


def belt_margin(p: float) -> v2.RandomZoomOut:
    """With probability p, the item on a canvas up to 30% larger filled with belt grey."""
    return v2.RandomZoomOut(fill=BELT_FILL, side_range=(1.0, 1.3), p=p)


def belt_augmentation(height: int, width: int, strength: float = 1.0) -> v2.Compose:
    """uint8 CHW tensor -> augmented uint8 CHW tensor at the same size."""
    return v2.Compose(
        [
            belt_margin(0.5 * strength),  # the item on belt, as a detector's crop shows it
            v2.RandomResizedCrop((height, width), scale=(0.6, 1.0), ratio=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomApply([v2.RandomRotation(180, fill=BELT_FILL)], p=0.5 * strength),
            v2.ColorJitter(0.3 * strength, 0.3 * strength, 0.2 * strength, 0.03 * strength),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.2))], p=0.2 * strength),
            v2.ToDtype(torch.uint8),
        ]
    )
