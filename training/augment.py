"""Augmentation that fits a belt camera: any rotation, flips, lighting drift, a bit of zoom/blur."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def belt_augmentation(height: int, width: int, strength: float = 1.0) -> v2.Compose:
    """uint8 CHW tensor -> augmented uint8 CHW tensor at the same size."""
    return v2.Compose(
        [
            v2.RandomResizedCrop((height, width), scale=(0.6, 1.0), ratio=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomApply([v2.RandomRotation(180, fill=0)], p=0.5 * strength),
            v2.ColorJitter(0.3 * strength, 0.3 * strength, 0.2 * strength, 0.03 * strength),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.2))], p=0.2 * strength),
            v2.ToDtype(torch.uint8),
        ]
    )
