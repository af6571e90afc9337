"""The student network: shapes, token layout, attention masking, the affine layer."""

from __future__ import annotations

import pytest
import torch

from model.attention import GlobalWindowAttention, global_window_mask
from model.config import StudentConfig, tiny_config
from model.feature_affine import FeatureWiseAffine
from model.student import DistilledViT


@pytest.mark.parametrize("size", [(24, 24), (24, 32), (32, 16)])
def test_shapes_square_and_non_square(size: tuple[int, int]) -> None:
    m = DistilledViT(tiny_config(image_size=size))
    x = torch.randn(3, 3, *size)
    m.train()
    cls_logits, dist_logits = m(x)
    assert cls_logits.shape == dist_logits.shape == (3, 6)
    m.eval()
    out = m(x)
    assert out.shape == (3, 6)
    assert torch.allclose(out, (m.head(m.forward_features(x)[0]) + m.head_dist(m.forward_features(x)[1])) / 2)


def test_wrong_input_size_is_a_clear_error() -> None:
    m = DistilledViT(tiny_config(image_size=(24, 32)))
    with pytest.raises(ValueError, match="image_size"):
        m(torch.randn(1, 3, 32, 24))


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        StudentConfig(image_size=(100, 96), patch_size=8)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        StudentConfig(d_model=10, n_heads=3)


def test_class_token_at_head_and_distillation_token_at_tail() -> None:
    m = DistilledViT(tiny_config()).eval()
    x = torch.randn(2, 3, 24, 32)
    seq = m.tokens(x)
    n = m.cfg.num_patches
    assert seq.shape == (2, n + 2, m.cfg.d_model)
    assert torch.allclose(seq[:, 0], (m.cls_token + m.pos_embed[:, 0])[0].expand(2, -1))
    assert torch.allclose(seq[:, -1], (m.dist_token + m.pos_embed[:, -1])[0].expand(2, -1))
    # the distillation head reads the last position: perturbing only the dist token's
    # embedding changes dist features, and the class head reads position 0
    h = seq
    for b in m.blocks:
        h = b(h)
    cls_feat, dist_feat = m.forward_features(x)
    assert torch.allclose(cls_feat, h[:, 0]) and torch.allclose(dist_feat, h[:, -1])


def _naive_reference(x: torch.Tensor, attn: GlobalWindowAttention, grid: tuple[int, int], radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop over queries; each builds its own key set from the rules, with no shared mask."""
    b, length, d = x.shape
    rows, cols = grid
    heads, hd = attn.n_heads, attn.head_dim
    qkv = attn.qkv(x).reshape(b, length, 3, heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = torch.zeros(b, length, heads, hd)
    weights = torch.zeros(b, heads, length, length)
    for i in range(length):
        if i in (0, length - 1):
            keys = list(range(length))
        else:
            r, c = divmod(i - 1, cols)
            keys = [0, length - 1] + [
                1 + rr * cols + cc
                for rr in range(rows)
                for cc in range(cols)
                if abs(rr - r) <= radius and abs(cc - c) <= radius
            ]
        keys = sorted(keys)
        s = torch.einsum("bhd,bkhd->bhk", q[:, i], k[:, keys]) / hd**0.5
        w = s.softmax(-1)
        weights[:, :, i, keys] = w
        out[:, i] = torch.einsum("bhk,bkhd->bhd", w, v[:, keys])
    return attn.proj(out.reshape(b, length, d)), weights


@pytest.mark.parametrize("grid,radius", [((3, 4), 1), ((4, 5), 2), ((2, 3), 0)])
def test_global_window_attention_matches_naive_reference(grid: tuple[int, int], radius: int) -> None:
    torch.manual_seed(0)
    attn = GlobalWindowAttention(16, 2, grid, radius).eval()
    length = grid[0] * grid[1] + 2
    x = torch.randn(2, length, 16)
    ref_out, ref_w = _naive_reference(x, attn, grid, radius)
    w = attn.attention_weights(x)
    assert torch.allclose(attn(x), ref_out, atol=1e-5)
    assert torch.allclose(w, ref_w, atol=1e-6)
    mask = global_window_mask(grid, radius)
    assert (w[:, :, ~mask] == 0).all(), "weights outside the window must be exactly zero"
    assert (w[:, :, 0, :] > 0).all() and (w[:, :, -1, :] > 0).all(), "special tokens must see every token"
    assert (w[:, :, 1:-1, 0] > 0).all() and (w[:, :, 1:-1, -1] > 0).all(), "patches must see both special tokens"


@pytest.mark.parametrize("grid,radius", [((3, 4), 1), ((6, 5), 2), ((2, 3), 0)])
def test_gathered_window_attention_equals_the_masked_one(grid: tuple[int, int], radius: int) -> None:
    torch.manual_seed(0)
    masked = GlobalWindowAttention(16, 2, grid, radius).eval()
    gathered = GlobalWindowAttention(16, 2, grid, radius, impl="gather").eval()
    gathered.load_state_dict(masked.state_dict())
    x = torch.randn(3, grid[0] * grid[1] + 2, 16)
    assert torch.allclose(masked(x), gathered(x), atol=1e-5)
    ref_out, _ = _naive_reference(x, gathered, grid, radius)
    assert torch.allclose(gathered(x), ref_out, atol=1e-5)


def test_window_mask_shape_of_a_corner_and_a_centre_patch() -> None:
    mask = global_window_mask((5, 5), 1)
    corner = mask[1, 1:-1].reshape(5, 5)
    assert corner.sum() == 4 and corner[:2, :2].all()
    centre = mask[1 + 12, 1:-1].reshape(5, 5)
    assert centre.sum() == 9 and centre[1:4, 1:4].all()
    assert global_window_mask((5, 5), None).all()


def test_feature_affine_identity_in_eval_random_in_train() -> None:
    layer = FeatureWiseAffine(8)
    x = torch.randn(4, 5, 8)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    a, b = layer(x), layer(x)
    assert not torch.allclose(a, x) and not torch.allclose(a, b)
    layer.enabled = False
    assert torch.equal(layer(x), x)


def test_feature_affine_noise_follows_its_scales() -> None:
    layer = FeatureWiseAffine(4, init_gamma=0.5, init_beta=0.2).train()
    torch.manual_seed(0)
    x = torch.zeros(20000, 1, 4)
    with torch.no_grad():
        y = layer(x)  # gamma*0 + beta -> beta distribution
        ones = layer(torch.ones(20000, 1, 4))
    assert abs(float(y.std()) - 0.2) < 0.01
    assert abs(float(ones.std()) - (0.5**2 + 0.2**2) ** 0.5) < 0.02


def test_ablation_variants_build_and_run() -> None:
    x = torch.randn(2, 3, 24, 32)
    for cfg in (tiny_config(window_radius=None), tiny_config(conv_ffn=False), tiny_config(use_feature_affine=False), tiny_config(conv_depth=3)):
        m = DistilledViT(cfg).eval()
        assert m(x).shape == (2, 6)
    assert DistilledViT(tiny_config(use_feature_affine=False)).affine_parameters() == []
