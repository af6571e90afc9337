"""What the second training needs around the student: its input, its CNN stem, its view stream."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.config import StudentConfig
from model.preprocess import PreprocessConfig
from model.student import ConvStemEmbedding, DistilledViT

from .data import Sample
from .view_cache import STEM_SOURCES, ViewCache, teacher_spec_pre
from .view_data import SeededViews, StemFeatureViews, load_photos, mask_store_for


def student_preprocess(cfg: StudentConfig) -> PreprocessConfig:
    """The student's input: its configured size and the normalisation its stem expects."""
    mean, std = cfg.input_mean_std
    return PreprocessConfig(height=cfg.image_size[0], width=cfg.image_size[1], mean=mean, std=std)


class EpochViews(Dataset):
    """One stored view per photo per epoch: photo i shows view (epoch + offset_i) mod K, so K epochs
    go through every view once and each batch mixes views of different rounds."""

    def __init__(self, views: SeededViews | StemFeatureViews, seed: int = 0) -> None:
        self.views = views
        self.k = views.views
        self.labels = views.photo_labels
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
    teacher_pre = teacher_spec_pre(Path(cache.teacher))
    photos = load_photos(train, (teacher_pre.height, teacher_pre.width), mask_store_for(run_dir))
    return EpochViews(SeededViews(photos, cache.seeds, pre, cache.policy, targets=cache.logits))


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


def set_stem(student: DistilledViT, source: str, teacher_path: Path) -> None:
    """Give the student's CNN stem its weights: the fine-tuned teacher's first stages ("teacher"),
    or the ImageNet-pretrained network's, untouched ("imagenet": what the unknown-item descriptor
    continues, model/descriptor.py)."""
    if source == "teacher":
        copy_stem_from_teacher(student, teacher_path)
        return
    if source != "imagenet":
        raise ValueError(f"stem source {source!r} is not one of {', '.join(STEM_SOURCES)}")
    if not isinstance(student.patch_embed, ConvStemEmbedding):
        raise ValueError("an ImageNet stem needs a student with a CNN stem (StudentConfig.stem)")
    from model.efficientnet_lite import LiteStem

    student.patch_embed.cnn.load_state_dict(LiteStem(student.cfg.stem, student.cfg.stem_stages, pretrained=True).state_dict())


def stem_record(features_path: Path) -> dict:
    """How stored stem outputs were made: the .json that teacher-cache writes beside them."""
    info_path = features_path.with_suffix(".json")
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} (the record of how {features_path.name} was made) is missing")
    return dict(json.loads(info_path.read_text()))


def stem_source_of(features_path: Path) -> str:
    """Which stem made stored stem outputs (records from before the choice existed: the teacher's)."""
    return str(stem_record(features_path).get("stem_source", "teacher"))


def stem_for_features(student: DistilledViT, features_path: Path, teacher_path: Path) -> None:
    """The very stem whose outputs `features_path` stores, checked by its weights' hash. A student
    whose frozen stages already are that stem (a warm start from a trained student, `distill
    --init`) keeps its own weights, so its tuned stages (cfg.stem_tuned_stages) are not reset."""
    if stem_record(features_path).get("stem_signature") != stem_signature(student):
        set_stem(student, stem_source_of(features_path), teacher_path)
    check_stem_features(features_path, student)


def freeze_stem(student: DistilledViT, stages: int) -> None:
    """Fix the stem convolution and its first `stages` stages; the stem's batch-norm statistics
    stay fixed throughout (the student's train and eval modes then compute the same stem)."""
    if not isinstance(student.patch_embed, ConvStemEmbedding) or stages <= 0:
        return
    cnn = student.patch_embed.cnn
    for module in (cnn.conv_stem, cnn.bn1, *list(cnn.blocks)[:stages]):
        for p in module.parameters():
            p.requires_grad_(False)


class FromStem(torch.nn.Module):
    """Training view of a student fed stored stem outputs instead of images (see forward_from_stem)."""

    def __init__(self, student: DistilledViT) -> None:
        super().__init__()
        self.student = student

    def forward(self, grid: torch.Tensor):  # type: ignore[no-untyped-def]
        return self.student.forward_from_stem(grid)


def stem_feature_dataset(cache_path: Path, features_path: Path, train: list[Sample], names: list[str]) -> EpochViews:
    """The training stream of a frozen-stem distillation: stored stem outputs + teacher logits."""
    cache = ViewCache.load(cache_path)
    cache.check_matches(names, [s.path for s in train])
    if not features_path.is_file():
        raise FileNotFoundError(f"stem features not found: {features_path} (teacher-cache --student-config makes them)")
    features = np.load(features_path, mmap_mode="r")
    return EpochViews(StemFeatureViews(features, [s.label for s in train], cache.logits))


def stem_signature(student: DistilledViT) -> str:
    """A short hash of the stem's weights, so stored stem outputs are only used with that stem."""
    if not isinstance(student.patch_embed, ConvStemEmbedding):
        return ""
    h = hashlib.sha1()
    cnn = student.patch_embed.cnn
    frozen = set(cnn.state_keys_until(student.cfg.frozen_stem_stages))  # the part whose outputs are stored
    for k, v in sorted(cnn.state_dict().items()):
        if k not in frozen:
            continue
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def check_stem_features(features_path: Path, student: DistilledViT) -> None:
    """Stored stem outputs must come from this student's stem weights at this student's input."""
    info = stem_record(features_path)
    if info["stem_signature"] != stem_signature(student):
        raise ValueError(f"{features_path} was made with other stem weights than this student's; rebuild it with teacher-cache --student-config")
    made = StudentConfig.from_dict(info["student_config"])
    if (made.image_size, made.stem, made.frozen_stem_stages) != (student.cfg.image_size, student.cfg.stem, student.cfg.frozen_stem_stages):
        raise ValueError(f"{features_path} was made for input {made.image_size} with {made.stem}[:{made.frozen_stem_stages}], the student has {student.cfg.image_size} with {student.cfg.stem}[:{student.cfg.frozen_stem_stages}] (frozen stages)")
