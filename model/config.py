"""Configuration of the student model, kept in every checkpoint so a file rebuilds its own network."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD


LITE_STEMS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
LITE_STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)  # total stride after each stage of an EfficientNet-Lite


@dataclass(frozen=True)
class StudentConfig:
    """Hyper-parameters of the distilled global+window vision transformer.

    `image_size` is (height, width); both must be multiples of `patch_size`.
    `window_radius` is the Chebyshev radius of each patch token's 2-D window
    on the patch grid (radius 1 = 3x3 neighbourhood). `window_radius=None`
    turns the block into plain global attention (used by the ablation).
    `conv_ffn=False` replaces the convolutional feed-forward by a plain MLP
    (ablation). `conv_depth` is the number of depthwise convolutions.
    """

    num_classes: int = 6
    image_size: tuple[int, int] = (128, 96)
    patch_size: int = 8
    in_chans: int = 3
    d_model: int = 192
    n_layers: int = 6
    n_heads: int = 3
    d_ff: int = 384
    window_radius: int | None = 2
    attention_impl: str = "masked"  # "masked" (one SDPA with a mask) or "gather" (neighbourhood gather)
    conv_depth: int = 1
    conv_kernel: int = 3
    conv_ffn: bool = True
    emb_dropout: float = 0.3
    attn_dropout: float = 0.0
    ffn_dropout: float = 0.0
    affine_init_gamma: float = 0.3
    affine_init_beta: float = 0.5
    use_feature_affine: bool = True
    # "linear": each patch flattened and projected (the patent's literal reading); an EfficientNet-Lite
    # name: the first `stem_stages` stages of that ImageNet-pretrained CNN cut the image into
    # stride-sized cells and a 1x1 projection takes each cell to d_model (the hybrid ViT; docs/method.md)
    stem: str = "linear"
    stem_stages: int = 4
    stem_pretrained: bool = True  # load the stem's ImageNet weights when the network is first built
    # a distillation from stored stem outputs trains the last `stem_tuned_stages` stem stages and keeps
    # the ones before them frozen (their outputs are what is stored; the unknown-item descriptor,
    # model/descriptor.py, continues them with the ImageNet network's own later stages)
    stem_tuned_stages: int = 0

    def __post_init__(self) -> None:
        h, w = self.image_size
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.window_radius is not None and self.window_radius < 0:
            raise ValueError(f"window_radius must be >= 0 or None, got {self.window_radius}")
        if self.attention_impl not in ("masked", "gather"):
            raise ValueError(f"attention_impl must be 'masked' or 'gather', got {self.attention_impl!r}")
        if not 0.0 <= self.emb_dropout < 1.0:
            raise ValueError(f"emb_dropout must be in [0, 1), got {self.emb_dropout}")
        if self.conv_depth < 0:
            raise ValueError(f"conv_depth must be >= 0, got {self.conv_depth}")
        if self.stem != "linear":
            if self.stem not in LITE_STEMS:
                raise ValueError(f"stem must be 'linear' or one of {LITE_STEMS}, got {self.stem!r}")
            if not 1 <= self.stem_stages <= len(LITE_STAGE_STRIDES):
                raise ValueError(f"stem_stages must be 1..{len(LITE_STAGE_STRIDES)}, got {self.stem_stages}")
            stride = LITE_STAGE_STRIDES[self.stem_stages - 1]
            if self.patch_size != stride:
                raise ValueError(f"a {self.stem} stem with {self.stem_stages} stages has stride {stride}: patch_size must be {stride}, got {self.patch_size}")
            if not 0 <= self.stem_tuned_stages < self.stem_stages:
                raise ValueError(f"stem_tuned_stages must be 0..{self.stem_stages - 1} (some stage stays frozen), got {self.stem_tuned_stages}")
            if LITE_STAGE_STRIDES[self.frozen_stem_stages - 1] != stride:
                raise ValueError(f"the tuned stem stages must keep the stride ({stride}): stage {self.frozen_stem_stages} has stride "
                                 f"{LITE_STAGE_STRIDES[self.frozen_stem_stages - 1]}, so the stored stem outputs would not be on the patch grid")
        elif self.stem_tuned_stages:
            raise ValueError("stem_tuned_stages needs a CNN stem")

    @property
    def frozen_stem_stages(self) -> int:
        """The stem stages whose outputs a distillation stores and never trains."""
        return self.stem_stages - self.stem_tuned_stages

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (rows, cols)."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols

    @property
    def input_mean_std(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """Normalisation the network expects: the pretrained stem's own, else ImageNet's."""
        if self.stem == "linear":
            return IMAGENET_MEAN, IMAGENET_STD
        return LITE_MEAN, LITE_STD

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StudentConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown StudentConfig keys: {sorted(unknown)}")
        data = dict(data)
        if "image_size" in data:
            data["image_size"] = tuple(data["image_size"])
        return cls(**data)

    def replace(self, **changes: Any) -> "StudentConfig":
        d = self.to_dict()
        d.update(changes)
        return StudentConfig.from_dict(d)


def tiny_config(num_classes: int = 6, **overrides: Any) -> StudentConfig:
    """A very small config for tests: builds and runs in milliseconds."""
    base: dict[str, Any] = dict(
        num_classes=num_classes,
        image_size=(24, 32),
        patch_size=8,
        d_model=16,
        n_layers=2,
        n_heads=2,
        d_ff=32,
        window_radius=1,
        conv_depth=1,
    )
    base.update(overrides)
    return StudentConfig(**base)


__all__ = ["StudentConfig", "tiny_config"]
