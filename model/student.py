"""The student: a distilled vision transformer with global+window attention,
a meta-learned feature-wise affine layer and a convolutional feed-forward.

Token layout: [cls, patches..., dist] -- the class token at the HEAD and the
distillation token at the TAIL of the sequence, as the patent specifies.
Training mode returns (cls_logits, dist_logits); eval mode returns their
average, the usual DeiT-style inference for a distilled model.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import GlobalWindowAttention
from .config import StudentConfig
from .conv_ffn import ConvFeedForward, MlpFeedForward
from .feature_affine import FeatureWiseAffine


class PatchEmbedding(nn.Module):
    """Cut the image into fixed-size patches, flatten each, project it linearly to d_model."""

    def __init__(self, patch_size: int, in_chans: int, d_model: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(patch_size * patch_size * in_chans, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
        return self.proj(patches)


def inference_logits(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The one rule for a distilled model's prediction: the mean of its class and distillation heads
    (DeiT); a one-head model's logits pass through."""
    if isinstance(out, tuple):
        return (out[0] + out[1]) / 2
    return out


class ConvStemEmbedding(nn.Module):
    """Cut the image into stride-sized cells with a pretrained CNN stem, project each cell to d_model.

    The hybrid reading of step 1 (ViT's "hybrid architecture"): the first stages of an
    ImageNet-pretrained EfficientNet-Lite turn every cfg.patch_size x patch_size cell of the image
    into a feature vector, and a linear projection (a 1x1 convolution) takes it to d_model. A
    from-scratch linear patch projection cannot learn materials from 1.7k photos on a CPU budget.
    """

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        from .efficientnet_lite import LiteStem  # timm is only needed by this stem

        self.cnn = LiteStem(cfg.stem, cfg.stem_stages, pretrained=cfg.stem_pretrained)
        if self.cnn.stride != cfg.patch_size:
            raise ValueError(f"stem stride {self.cnn.stride} != patch_size {cfg.patch_size}")
        self.proj = nn.Conv2d(self.cnn.out_channels, cfg.d_model, kernel_size=1)
        self.frozen_stages = cfg.frozen_stem_stages

    def train(self, mode: bool = True) -> "ConvStemEmbedding":
        """Batch-norm statistics of the pretrained stem stay fixed: batches of 32 mixed views would
        only add noise to ImageNet's (or the fine-tuned teacher's) estimates."""
        super().train(mode)
        for m in self.cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        """The image through the frozen part of the stem (what a distillation stores per view)."""
        return self.cnn.head(x, self.frozen_stages)

    def from_frozen(self, frozen: torch.Tensor) -> torch.Tensor:
        """The frozen part's output through the tuned stages and the projection: tokens."""
        return self.project(self.cnn.tail(frozen, self.frozen_stages))

    def project(self, grid: torch.Tensor) -> torch.Tensor:
        """Stem output (B, C, rows, cols) -> tokens (B, rows*cols, d_model), row-major."""
        return self.proj(grid).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.cnn(x))


class EncoderBlock(nn.Module):
    """attention -> residual+LN -> feature-wise affine -> feed-forward -> residual+LN."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        grid = cfg.grid_size
        self.attn = GlobalWindowAttention(
            cfg.d_model, cfg.n_heads, grid, cfg.window_radius, cfg.attn_dropout, cfg.attention_impl
        )
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.affine = (
            FeatureWiseAffine(cfg.d_model, cfg.affine_init_gamma, cfg.affine_init_beta)
            if cfg.use_feature_affine
            else nn.Identity()
        )
        self.ffn: nn.Module
        if cfg.conv_ffn:
            self.ffn = ConvFeedForward(cfg.d_model, cfg.d_ff, grid, cfg.conv_depth, cfg.conv_kernel, cfg.ffn_dropout)
        else:
            self.ffn = MlpFeedForward(cfg.d_model, cfg.d_ff, cfg.ffn_dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x + self.attn(x))
        return self.norm2(h + self.ffn(self.affine(h)))


class DistilledViT(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed: nn.Module = (
            PatchEmbedding(cfg.patch_size, cfg.in_chans, cfg.d_model) if cfg.stem == "linear" else ConvStemEmbedding(cfg)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 2, cfg.d_model))
        self.emb_drop = nn.Dropout(cfg.emb_dropout)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.head = nn.Linear(cfg.d_model, cfg.num_classes)
        self.head_dist = nn.Linear(cfg.d_model, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for t in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(t, std=0.02)
        for m in self.modules():  # the pretrained stem (no nn.Linear in it) keeps its weights
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded sequence (B, N+2, d) before the encoder: [cls, patches, dist] + positions."""
        expected = self.cfg.image_size
        if tuple(x.shape[-2:]) != tuple(expected):
            raise ValueError(f"input spatial size {tuple(x.shape[-2:])} != configured image_size {expected}")
        return self._sequence(self.patch_embed(x))

    def _sequence(self, patches: torch.Tensor) -> torch.Tensor:
        b = patches.shape[0]
        seq = torch.cat([self.cls_token.expand(b, -1, -1), patches, self.dist_token.expand(b, -1, -1)], dim=1)
        return self.emb_drop(seq + self.pos_embed)

    def _encode(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            h = block(h)
        return h[:, 0], h[:, -1]

    def _heads(self, cls_feat: torch.Tensor, dist_feat: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        cls_logits, dist_logits = self.head(cls_feat), self.head_dist(dist_feat)
        if self.training:
            return cls_logits, dist_logits
        return inference_logits((cls_logits, dist_logits))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final class-token and distillation-token features, each (B, d_model)."""
        return self._encode(self.tokens(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self._heads(*self.forward_features(x))

    def features_from_stem(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward_features from the output (B, C, rows, cols) of the stem's frozen part (the whole
        stem unless cfg.stem_tuned_stages): a training with a frozen stem computes that once per
        view instead of at every step."""
        if not isinstance(self.patch_embed, ConvStemEmbedding):
            raise ValueError("forward_from_stem needs a student with a CNN stem")
        expected = (self.patch_embed.cnn.channels_after(self.cfg.frozen_stem_stages), *self.cfg.grid_size)
        if tuple(grid.shape[1:]) != expected:
            raise ValueError(f"stem features of shape {tuple(grid.shape[1:])}, expected {expected}")
        return self._encode(self._sequence(self.patch_embed.from_frozen(grid)))

    def forward_from_stem(self, grid: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The same as forward, from the CNN stem's output (see features_from_stem)."""
        return self._heads(*self.features_from_stem(grid))

    def affine_layers(self) -> list[FeatureWiseAffine]:
        return [b.affine for b in self.blocks if isinstance(b.affine, FeatureWiseAffine)]

    def set_feature_affine(self, enabled: bool) -> None:
        """Switch the meta-transformer noise on or off (the meta training needs both)."""
        for layer in self.affine_layers():
            layer.enabled = enabled

    def affine_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.affine_layers() for p in (layer.theta_gamma, layer.theta_beta)]

    def backbone_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.affine_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]
