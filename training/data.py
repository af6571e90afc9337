"""Data: an ImageFolder directory scanned robustly, a saved stratified split, and datasets.

Unreadable images are skipped and reported, never crash a run half-way;
a missing folder or an empty class is a clear error up front. Images are
decoded once and kept at the model's input size in memory: on a 2-core CPU,
JPEG decoding would otherwise cost as much as the network.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from model.preprocess import PreprocessConfig, normalize, resize_to_rgb

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class DataError(ValueError):
    """The data folder is missing or malformed."""


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


@dataclass
class ImageFolderIndex:
    root: Path
    class_names: list[str]
    samples: list[Sample]
    skipped: list[tuple[str, str]]  # (path, reason)


def scan_image_folder(root: str | Path, class_names: list[str] | None = None) -> ImageFolderIndex:
    """Index root/<class>/<image>; verify every image decodes. Raise DataError on structural problems."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{root} has no class sub-folders (expected {root}/<class>/<image>)")
    names = class_names or found
    missing = [c for c in names if c not in found]
    if missing:
        raise DataError(f"{root} lacks class folders {missing} (has {found})")
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for label, name in enumerate(names):
        files = sorted(p for p in (root / name).iterdir() if p.is_file())
        good = 0
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((str(f), "not an image file"))
                continue
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None or img.size == 0:
                skipped.append((str(f), "unreadable image"))
                continue
            samples.append(Sample(str(f), label))
            good += 1
        if good == 0:
            raise DataError(f"class folder {root / name} has no readable images")
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    return ImageFolderIndex(root, list(names), samples, skipped)


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per-class seeded shuffle; the first val_fraction of each class goes to validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    train, val = [], []
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda s: s.path)
        rng.shuffle(items)
        n_val = max(1, round(len(items) * val_fraction))
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def save_split(path: Path, class_names: list[str], train: list[Sample], val: list[Sample], root: Path) -> None:
    rel = lambda s: str(Path(s.path).relative_to(root))  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "root": str(root),
                "class_names": class_names,
                "train": [[rel(s), s.label] for s in train],
                "val": [[rel(s), s.label] for s in val],
            },
            indent=1,
        )
    )


def load_split(path: Path, root: Path) -> tuple[list[str], list[Sample], list[Sample]]:
    d = json.loads(path.read_text())
    mk = lambda rows: [Sample(str(root / r), int(lbl)) for r, lbl in rows]  # noqa: E731
    return list(d["class_names"]), mk(d["train"]), mk(d["val"])


def get_split(
    data: Path, run_dir: Path, val_fraction: float, seed: int
) -> tuple[list[str], list[Sample], list[Sample], list[tuple[str, str]]]:
    """Reuse run_dir/split.json when present (resume, later stages), else make and save it."""
    split_file = run_dir / "split.json"
    if split_file.is_file():
        names, train, val = load_split(split_file, data)
        return names, train, val, []
    index = scan_image_folder(data)
    train, val = stratified_split(index.samples, val_fraction, seed)
    save_split(split_file, index.class_names, train, val, data)
    return index.class_names, train, val, index.skipped


class CachedImageDataset(Dataset):
    """Images decoded once and resized to the input size (RGB uint8), augmented per access."""

    def __init__(
        self,
        samples: list[Sample],
        pre: PreprocessConfig,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.pre = pre
        self.augment = augment
        self.labels = [s.label for s in samples]
        self.paths = [s.path for s in samples]
        self.images = np.stack([resize_to_rgb(self._read(p), pre) for p in self.paths]) if samples else np.zeros(
            (0, pre.height, pre.width, 3), np.uint8
        )

    @staticmethod
    def _read(path: str) -> np.ndarray:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"image became unreadable during the run: {path}")
        return img

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rgb = self.images[i]
        if self.augment is not None:
            t = self.augment(torch.from_numpy(rgb).permute(2, 0, 1))  # uint8 CHW
            rgb = t.permute(1, 2, 0).numpy()
        return torch.from_numpy(normalize(rgb, self.pre)[0]), self.labels[i]


def class_counts(labels: list[int], num_classes: int) -> list[int]:
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes).tolist()
