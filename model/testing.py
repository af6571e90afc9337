"""Helpers for tests elsewhere in the project (daemon, benchmarks): tiny real checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import save_checkpoint
from .config import tiny_config
from .preprocess import PreprocessConfig
from .student import DistilledViT

DEFAULT_CLASSES = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


def make_tiny_checkpoint(path: Path, class_names: list[str] | None = None, seed: int = 0) -> Path:
    """A tiny, randomly initialised but fully valid checkpoint (loads with load_classifier)."""
    names = list(class_names or DEFAULT_CLASSES)
    torch.manual_seed(seed)
    model = DistilledViT(tiny_config(num_classes=len(names))).eval()
    h, w = model.cfg.image_size
    return save_checkpoint(path, model, names, PreprocessConfig(height=h, width=w), meta={"note": "tiny test model"})
