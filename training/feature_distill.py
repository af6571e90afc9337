"""Feature distillation: the student's class-token embedding learns to predict what an
ImageNet-pretrained network sees in the same view.

The logit distillation teaches the student six materials; nothing in it asks the embedding to
keep anything else, so a banana peel and a bottle can land on the same point. Here a linear head,
used in training only, maps the class-token feature (d_model) to the ImageNet network's
penultimate features (stored per view by `teacher-cache --imagenet-features`), with a cosine loss.
The embedding then has to carry, linearly, the ImageNet network's description of the object, and
the distance scorers of model/unknown.py (Mahalanobis, k-NN) use it to tell items of no trained
class apart. The daemon runs only the student; the head is not exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from model.student import DistilledViT


class FeatureHead(nn.Module):
    """d_model -> the ImageNet network's feature size."""

    def __init__(self, d_model: int, target_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, target_dim)

    def forward(self, cls_feat: torch.Tensor) -> torch.Tensor:
        return self.proj(cls_feat)


def feature_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, batch mean: the direction of the features, not their scale."""
    return (1.0 - F.cosine_similarity(predicted, target.to(predicted.dtype), dim=1)).mean()


class FromStemWithFeatures(nn.Module):
    """Training view of a student fed stored stem outputs that also returns its predicted ImageNet
    features: (cls_logits, dist_logits, predicted features)."""

    def __init__(self, student: DistilledViT, head: FeatureHead) -> None:
        super().__init__()
        self.student, self.head = student, head

    def forward(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cls_feat, dist_feat = self.student.features_from_stem(grid)
        return self.student.head(cls_feat), self.student.head_dist(dist_feat), self.head(cls_feat)


class WithFeatureTargets(Dataset):
    """Appends the stored ImageNet features of view (i, k) to each item of a stem-feature stream
    (StemFeatureViews: flat index j = i * K + k)."""

    def __init__(self, views: Dataset, targets: np.ndarray) -> None:
        n_views = len(views)  # type: ignore[arg-type]
        if targets.shape[0] * targets.shape[1] != n_views:
            raise ValueError(f"ImageNet features for {targets.shape[0]} x {targets.shape[1]} views, the stream has {n_views}")
        self.base, self.targets = views, targets
        self.views = targets.shape[1]
        self.photo_labels = views.photo_labels  # type: ignore[attr-defined]
        self.labels = views.labels  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, j: int):  # type: ignore[no-untyped-def]
        i, k = divmod(j, self.views)
        return (*self.base[j], torch.from_numpy(self.targets[i, k].astype(np.float32)))


def load_feature_targets(path: Path, n_photos: int, n_views: int) -> np.ndarray:
    """The stored ImageNet features (memory-mapped), checked against the view table's shape."""
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet features not found: {path} (teacher-cache --student-config ... --imagenet-features makes them)")
    targets = np.load(path, mmap_mode="r")
    if targets.ndim != 3 or targets.shape[:2] != (n_photos, n_views):
        raise ValueError(f"{path} holds features of shape {targets.shape}, expected ({n_photos}, {n_views}, D)")
    info = path.with_suffix(".json")
    if not info.is_file():
        raise FileNotFoundError(f"{info} (the record of how {path.name} was made) is missing")
    made = json.loads(info.read_text())
    if list(made.get("shape", [])) != list(targets.shape):
        raise ValueError(f"{info} records features of shape {made.get('shape')}, {path.name} holds {list(targets.shape)}: rebuild them")
    return targets


__all__ = ["FeatureHead", "FromStemWithFeatures", "WithFeatureTargets", "feature_loss", "load_feature_targets"]
