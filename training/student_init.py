"""What the second training needs around the student: its input, its CNN stem, its view stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.config import StudentConfig
from model.preprocess import PreprocessConfig
from model.student import ConvStemEmbedding, DistilledViT

from .data import Sample
from .view_cache import ViewCache
from .view_data import SeededViews, load_photos, mask_store_for


def student_preprocess(cfg: StudentConfig) -> PreprocessConfig:
    """The student's input: its configured size and the normalisation its stem expects."""
    mean, std = cfg.input_mean_std
    return PreprocessConfig(height=cfg.image_size[0], width=cfg.image_size[1], mean=mean, std=std)


class EpochViews(Dataset):
    """One stored view per photo per epoch: photo i shows view (epoch + offset_i) mod K, so K epochs
    go through every view once and each batch mixes views of different rounds."""

    def __init__(self, views: SeededViews, seed: int = 0) -> None:
        self.views = views
        self.k = views.views
        self.labels = views.photos.labels
        self.offset = np.random.default_rng(seed).integers(0, self.k, len(self.labels))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return self.views[i * self.k + int((self.epoch + self.offset[i]) % self.k)]


def cached_view_dataset(path: Path, train: list[Sample], names: list[str], pre: PreprocessConfig, run_dir: Path) -> EpochViews:
    """The training stream of a cached-teacher distillation, checked against the run's split."""
    cache = ViewCache.load(path)
    cache.check_matches(names, [s.path for s in train])
    # render at the size the cache's views were made at (the teacher's), then resize to the student
    teacher_pre = _teacher_input(cache)
    photos = load_photos(train, (teacher_pre.height, teacher_pre.width), mask_store_for(run_dir))
    return EpochViews(SeededViews(photos, cache.seeds, pre, targets=cache.logits))


def _teacher_input(cache: ViewCache) -> PreprocessConfig:
    from .teacher_train import load_teacher_spec

    _, spec, _ = load_teacher_spec(Path(cache.teacher), torch.device("cpu"))
    return spec.preprocess


def copy_stem_from_teacher(student: DistilledViT, teacher_path: Path) -> None:
    """Initialise the student's CNN stem with the fine-tuned teacher's first stages (same variant)."""
    from .teacher_train import load_teacher_spec

    if not isinstance(student.patch_embed, ConvStemEmbedding):
        raise ValueError("--stem-from-teacher needs a student with a CNN stem (StudentConfig.stem)")
    teacher, spec, _ = load_teacher_spec(teacher_path, torch.device("cpu"))
    if spec.arch != student.cfg.stem:
        raise ValueError(f"teacher {teacher_path} is a {spec.arch}; the student's stem is a {student.cfg.stem}")
    own = student.patch_embed.cnn.state_dict()
    source = teacher.state_dict()
    missing = [k for k in own if k not in source]
    if missing:
        raise ValueError(f"teacher {teacher_path} lacks stem weights {missing[:3]}...")
    student.patch_embed.cnn.load_state_dict({k: source[k] for k in own})


def freeze_stem(student: DistilledViT, stages: int) -> None:
    """Fix the stem convolution and its first `stages` stages; the stem's batch-norm statistics
    stay fixed throughout (the student's train and eval modes then compute the same stem)."""
    if not isinstance(student.patch_embed, ConvStemEmbedding) or stages <= 0:
        return
    cnn = student.patch_embed.cnn
    for module in (cnn.conv_stem, cnn.bn1, *list(cnn.blocks)[:stages]):
        for p in module.parameters():
            p.requires_grad_(False)
