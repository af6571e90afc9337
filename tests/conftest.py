"""Shared fixtures: tiny real checkpoints and tiny real image folders."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
import structlog

REPO = Path(__file__).resolve().parent.parent
TRASHNET = REPO.parent / "shared" / "datasets" / "trashnet"
SAMPLES = REPO / "daemon" / "samples"
CLASSES = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


@pytest.fixture(autouse=True)
def _structlog_back_to_defaults() -> Iterator[None]:
    """A test that runs the demo or the daemon in-process configures structlog to print to the
    sys.stderr of that moment, pytest's capture file, which is closed after the test: a later test
    whose threads log would then die on a closed file. Every test starts from the defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path) -> Path:
    from model.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path / "tiny.pt")


def _real_images(cls: str) -> list[Path]:
    for root in (TRASHNET, SAMPLES):
        d = root / cls
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            if files:
                return files
    return []


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """An ImageFolder with 8 real photos per class (TrashNet or the bundled samples, flipped to make more)."""
    root = tmp_path / "data"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        files = _real_images(cls)
        if not files:
            pytest.skip("no real images available (TrashNet or daemon/samples)")
        for i in range(8):
            img = cv2.imread(str(files[i % len(files)]))
            if i >= len(files):
                img = cv2.flip(img, i % 3 - 1)
            cv2.imwrite(str(root / cls / f"{cls}{i}.jpg"), img)
    return root


def random_bgr(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


__all__ = ["random_bgr", "CLASSES", "shutil"]
