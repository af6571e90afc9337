"""Datasets of rendered views (training.views): fresh random views, or a fixed table of seeds.

Photos are decoded once at the largest size any network here uses (the teacher's) together
with their item masks; every view is rendered at that size and resized down to the network
being fed, so a teacher and a student given the same seed see the same scene.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from model.preprocess import PreprocessConfig, normalize

from .camera_degrade import CameraDegradation, fixed_degradation
from .cutout import MaskStore
from .data import DataError, Sample
from .views import ViewPolicy, neighbour_picker, render_view, seed_for

log = logging.getLogger(__name__)


@dataclass
class Photos:
    """Decoded photos (RGB uint8 at `size`), their item masks and labels."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    labels: list[int]
    size: tuple[int, int]  # (height, width)


def load_photos(samples: list[Sample], size: tuple[int, int], masks: MaskStore | None) -> Photos:
    """Decode each photo once at `size`; cut-out masks from the store (computed on first use)."""
    h, w = size
    images, mask_list = [], []
    for s in samples:
        bgr = cv2.imread(s.path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"image became unreadable during the run: {s.path}")
        mask = masks.get(s.path, bgr) if masks is not None else np.full(bgr.shape[:2], 255, np.uint8)
        images.append(cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
        mask_list.append(cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR))
    return Photos(images, mask_list, [s.label for s in samples], size)


def to_input(view: np.ndarray, pre: PreprocessConfig) -> torch.Tensor:
    """A rendered RGB view -> one normalised (3, H, W) tensor at the network's own size."""
    if view.shape[:2] != (pre.height, pre.width):
        interp = cv2.INTER_AREA if view.shape[0] > pre.height else cv2.INTER_LINEAR
        view = cv2.resize(view, (pre.width, pre.height), interpolation=interp)
    return torch.from_numpy(normalize(view, pre)[0])


class RandomViews(Dataset):
    """A fresh random view of each photo at every access (the teacher's fine-tuning)."""

    def __init__(self, photos: Photos, pre: PreprocessConfig, policy: ViewPolicy = ViewPolicy(), base_seed: int = 0) -> None:
        self.photos, self.pre, self.policy = photos, pre, policy
        self.labels = photos.labels
        self.neighbours = neighbour_picker(photos.images, photos.masks)
        self._rng = np.random.default_rng(base_seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        seed = int(self._rng.integers(2**63 - 1))
        view = render_view(self.photos.images[i], self.photos.masks[i], seed, self.photos.size, self.policy, self.neighbours)
        return to_input(view, self.pre), self.labels[i]


class SeededViews(Dataset):
    """View `seeds[i, k]` of photo i for every (i, k): the same pixels every time it is read.

    Item j of the dataset is (photo j // K, view j % K); with `targets` (N, K, C) it also returns
    the teacher's stored logits for that very view.
    """

    def __init__(self, photos: Photos, seeds: np.ndarray, pre: PreprocessConfig, policy: ViewPolicy = ViewPolicy(), targets: np.ndarray | None = None, camera: CameraDegradation | None = None) -> None:
        if seeds.ndim != 2 or seeds.shape[0] != len(photos.images):
            raise ValueError(f"seeds must be (photos, views) = ({len(photos.images)}, K), got {seeds.shape}")
        if targets is not None and targets.shape[:2] != seeds.shape:
            raise ValueError(f"teacher targets {targets.shape[:2]} do not match the view table {seeds.shape}")
        self.photos, self.seeds, self.pre, self.policy, self.targets = photos, seeds, pre, policy, targets
        self.camera = camera  # each view then degraded as a belt camera would (seeded by the view's seed)
        self.views = seeds.shape[1]
        self.photo_labels = photos.labels
        self.labels = [lbl for lbl in photos.labels for _ in range(self.views)]
        self.neighbours = neighbour_picker(photos.images, photos.masks)

    def __len__(self) -> int:
        return len(self.labels)

    def seed(self, j: int) -> int:
        i, k = divmod(j, self.views)
        return int(self.seeds[i, k])

    def render(self, j: int) -> np.ndarray:
        i, k = divmod(j, self.views)
        return render_view(self.photos.images[i], self.photos.masks[i], int(self.seeds[i, k]), self.photos.size, self.policy, self.neighbours)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, torch.Tensor]:
        view = self.render(j)
        x = to_input(self.camera.apply(view, self.seed(j)) if self.camera is not None else view, self.pre)
        if self.targets is None:
            return x, self.labels[j]
        i, k = divmod(j, self.views)
        return x, self.labels[j], torch.from_numpy(self.targets[i, k])


class StemFeatureViews(Dataset):
    """Stored CNN-stem outputs of the same (photo, view) table, with the teacher's logits: a
    student whose stem is frozen trains from these without rendering or running the stem."""

    def __init__(self, features: np.ndarray, labels: list[int], targets: np.ndarray) -> None:
        if features.shape[:2] != targets.shape[:2] or features.shape[0] != len(labels):
            raise ValueError(f"stem features {features.shape[:2]}, teacher targets {targets.shape[:2]} and {len(labels)} labels disagree")
        self.features, self.targets = features, targets
        self.views = features.shape[1]
        self.photo_labels = list(labels)
        self.labels = [lbl for lbl in labels for _ in range(self.views)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        i, k = divmod(j, self.views)
        return torch.from_numpy(self.features[i, k].astype(np.float32)), self.labels[j], torch.from_numpy(self.targets[i, k])


class PlainPhotos(Dataset):
    """The photos as they are, resized to the network: the validation view. With `camera`, each
    photo as a belt camera delivers it (a fixed degradation per photo, seeded by `camera_seed`)."""

    def __init__(self, photos: Photos, pre: PreprocessConfig, camera: CameraDegradation | None = None, camera_seed: int = 0) -> None:
        self.photos, self.pre, self.labels = photos, pre, photos.labels
        self.camera, self.camera_seed = camera, camera_seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.photos.images[i]
        if self.camera is not None:
            image = fixed_degradation(self.camera, image, self.camera_seed, i)
        return to_input(image, self.pre), self.labels[i]


def view_seeds(count: int, views: int, base_seed: int) -> np.ndarray:
    """(count, views) int64 table of view seeds, reproducible from base_seed."""
    return np.array([[seed_for(base_seed, i, k) for k in range(views)] for i in range(count)], np.int64)


def mask_store_for(run_dir: Path) -> MaskStore:
    return MaskStore(run_dir.parent / "masks" if run_dir.parent != run_dir else run_dir / "masks")


__all__ = ["Photos", "PlainPhotos", "RandomViews", "SeededViews", "StemFeatureViews", "load_photos", "mask_store_for", "to_input", "view_seeds"]
