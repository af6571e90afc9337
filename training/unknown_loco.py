"""Leave-one-class-out students with the shipped recipe, for `unknown-eval --views`.

The first leave-one-class-out table trained small from-scratch students with cross-entropy; the
shipped student is a transformer on a frozen pretrained stem, distilled from cached teacher
logits (and, with --imagenet-features, from ImageNet features). This trains that recipe on the
known classes only: the stored views of the held-out class's photos are left out, and the
teacher's logit for it is dropped, so the student never learns the held-out class exists.

What it cannot remove: the stem and the teacher were fine-tuned on all six classes (a teacher per
held-out class costs an hour on this CPU). The ImageNet features are from the network before any
fine-tuning and know nothing of the split. docs/results.md states this beside the table.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.config import StudentConfig
from model.loss import DistillationLoss
from model.student import DistilledViT

from .data import Sample
from .distill import optimiser_and_schedule, run_epoch
from .feature_distill import FeatureHead, FromStemWithFeatures, WithFeatureTargets, load_feature_targets
from .loop import make_loader
from .student_init import EpochViews, FromStem, freeze_stem, stem_for_features, stem_record
from .view_cache import ViewCache
from .view_data import StemFeatureViews

log = logging.getLogger(__name__)


class KnownPhotos(Dataset):
    """The views of the known classes' photos only, labels renumbered, the held-out class's
    teacher logit removed. Same interface as the full stream (views, photo_labels, labels)."""

    def __init__(self, stream: Dataset, photo_index: np.ndarray, new_label: dict[int, int], keep_columns: list[int]) -> None:
        self.stream, self.photo_index, self.keep = stream, photo_index, keep_columns
        self.views = stream.views  # type: ignore[attr-defined]
        old = stream.photo_labels  # type: ignore[attr-defined]
        self.photo_labels = [new_label[old[i]] for i in photo_index]
        self.labels = [lbl for lbl in self.photo_labels for _ in range(self.views)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, j: int):  # type: ignore[no-untyped-def]
        i, k = divmod(j, self.views)
        item = self.stream[int(self.photo_index[i]) * self.views + k]
        return (item[0], self.labels[j], item[2][self.keep], *item[3:])


def _config(features_path: Path, num_classes: int) -> StudentConfig:
    made = stem_record(features_path)["student_config"]
    return StudentConfig.from_dict({**made, "num_classes": num_classes, "stem_pretrained": False})


def train_known(args: argparse.Namespace, train: list[Sample], names: list[str], held: int, device: torch.device) -> DistilledViT:
    """A student of the shipped recipe on every class but `held` (class indices renumbered in order)."""
    cache = ViewCache.load(args.views)
    cache.check_matches(names, [s.path for s in train])
    keep = [c for c in range(len(names)) if c != held]
    new_label = {c: i for i, c in enumerate(keep)}
    student = DistilledViT(_config(args.stem_features, len(keep)))
    stem_for_features(student, args.stem_features, Path(cache.teacher))
    stream: Dataset = StemFeatureViews(np.load(args.stem_features, mmap_mode="r"), [s.label for s in train], cache.logits)
    head = None
    if args.imagenet_features is not None:
        targets = load_feature_targets(args.imagenet_features, len(train), cache.seeds.shape[1])
        stream = WithFeatureTargets(stream, targets)
        head = FeatureHead(student.cfg.d_model, int(targets.shape[2]))
    photos = np.flatnonzero(np.array([s.label for s in train]) != held)
    data = EpochViews(KnownPhotos(stream, photos, new_label, keep), seed=args.seed)
    loader = make_loader(data, args.batch_size, True, num_workers=args.workers)
    for p in student.affine_parameters():
        p.requires_grad_(False)
    freeze_stem(student, student.cfg.frozen_stem_stages)
    student = student.to(device)
    head = head.to(device) if head is not None else None
    trained = student if head is None else torch.nn.ModuleDict({"student": student, "feature_head": head})
    opt, sched = optimiser_and_schedule(trained, args.lr, args.epochs, len(loader))
    model: torch.nn.Module = FromStem(student) if head is None else FromStemWithFeatures(student, head)
    criterion = DistillationLoss(args.tau, args.lam)
    for epoch in range(args.epochs):
        data.set_epoch(epoch)
        loss, acc = run_epoch(model, None, loader, criterion, opt, sched, device, f"holdout-distill {epoch + 1}/{args.epochs}", feature_weight=args.feature_weight)
        log.info("holdout %s epoch %d: loss %.3f, training accuracy %.3f", names[held], epoch + 1, loss, acc)
    return student.eval()


__all__ = ["KnownPhotos", "train_known"]
