"""The ResNet-50 teacher: torchvision's model with a new head.

ImageNet weights are used only when available locally (an explicit file, or
torchvision's cache); this machine class has no internet, so the fallback is
training from scratch, announced with a clear log line. Never downloads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

log = logging.getLogger(__name__)


def _cached_imagenet_file() -> Path | None:
    url = ResNet50_Weights.IMAGENET1K_V2.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if cache.is_file():
        return cache
    url1 = ResNet50_Weights.IMAGENET1K_V1.url
    cache1 = Path(torch.hub.get_dir()) / "checkpoints" / Path(url1).name
    return cache1 if cache1.is_file() else None


def build_teacher(num_classes: int, weights: str | Path | None = None, imagenet: bool = True) -> nn.Module:
    """ResNet-50 with a `num_classes` head; ImageNet init from `weights` or the local cache if present.
    imagenet=False skips both (the caller loads a trained teacher's own weights next)."""
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
