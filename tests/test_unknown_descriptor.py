"""The ImageNet descriptor for unknown items: the pretrained network's later stages on the student's
own (ImageNet) stem, fitted by unknown-fit, run by both backends."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import StudentConfig
from model.descriptor import ImageNetDescriptor, descriptor_for, feature_source, stem_is_imagenet
from model.efficientnet_lite import LiteStem, build_lite
from model.inference import InferenceNet, inference_net, load_classifier
from model.student import DistilledViT
from training.cli import main as train_main
from training.data import Sample, save_split
from training.student_init import set_stem, stem_source_of, student_preprocess


def _config(num_classes: int = 6) -> StudentConfig:
    return StudentConfig(num_classes=num_classes, image_size=(64, 48), patch_size=16, stem="efficientnet_lite0", stem_stages=5,
                         d_model=32, n_layers=1, n_heads=2, d_ff=64, window_radius=1)


def test_the_descriptor_is_the_imagenet_network_after_the_stem_frozen() -> None:
    x = torch.randn(2, 3, 64, 48)
    stem, descriptor = LiteStem("efficientnet_lite0", 5).eval(), ImageNetDescriptor("efficientnet_lite0", 5)
    full = build_lite("efficientnet_lite0", 1000, pretrained=True).eval()
    with torch.no_grad():
        got = descriptor(stem(x))
        expected = full.blocks(full.bn1(full.conv_stem(x))).mean(dim=(2, 3))  # all seven stages, averaged
    assert got.shape == (2, 320) and torch.allclose(got, expected, atol=1e-5)
    assert not any(p.requires_grad for p in descriptor.parameters())
    descriptor.train()  # ImageNet's batch-norm statistics must never be updated by a training loop
    assert not descriptor.training
    with pytest.raises(ValueError, match="continues after stage 7"):
        ImageNetDescriptor("efficientnet_lite0", 7)
    first = ImageNetDescriptor("efficientnet_lite0", 5, blocks=1)  # the cheaper, shallower description
    with torch.no_grad():
        assert torch.allclose(first(stem(x)), full.blocks[5][0](stem(x)).mean(dim=(2, 3)), atol=1e-5)
    assert len(descriptor.blocks) == 5  # stage 6 (four blocks) and stage 7 (one)
    with pytest.raises(ValueError, match="takes 1..5 blocks"):
        ImageNetDescriptor("efficientnet_lite0", 5, blocks=6)


def test_the_stem_source_decides_whether_the_descriptor_applies(tmp_path: Path) -> None:
    student = DistilledViT(_config())
    assert stem_is_imagenet(student)  # built with the package's stem weights
    with torch.no_grad():
        student.patch_embed.cnn.blocks[4][0].conv_pw.weight.add_(0.01)  # fine-tuning moved it
    assert not stem_is_imagenet(student)
    set_stem(student, "imagenet", tmp_path / "unused.pt")
    assert stem_is_imagenet(student)
    with pytest.raises(ValueError, match="stem source 'scratch'"):
        set_stem(student, "scratch", tmp_path / "unused.pt")
    record = tmp_path / "stem.npy"
    record.with_suffix(".json").write_text(json.dumps({"stem_signature": "x"}))
    assert stem_source_of(record) == "teacher"  # records from before the choice: the teacher's stem
    record.with_suffix(".json").write_text(json.dumps({"stem_signature": "x", "stem_source": "imagenet"}))
    assert stem_source_of(record) == "imagenet"
    assert feature_source(None) == "class_token" and feature_source({"features": "imagenet"}) == "imagenet"
    with pytest.raises(ValueError, match="unknown-item features 'pixels'"):
        feature_source({"features": "pixels"})


def test_a_tuned_last_stem_stage_leaves_the_descriptor_on_the_frozen_stages() -> None:
    cfg = _config().replace(stem_tuned_stages=1)
    assert cfg.frozen_stem_stages == 4
    student = DistilledViT(cfg).eval()
    with torch.no_grad():
        student.patch_embed.cnn.blocks[4][0].conv_pw.weight.add_(0.01)  # the tuned stage moved: still fine
    assert stem_is_imagenet(student)
    descriptor = descriptor_for(cfg)
    assert len(descriptor.blocks) == 3 + 4 + 1  # ImageNet's own stage 5, then stages 6 and 7
    x = torch.randn(2, 3, 64, 48)
    full = build_lite("efficientnet_lite0", 1000, pretrained=True).eval()
    net = InferenceNet(student, descriptor)
    with torch.no_grad():
        logits, feat = net(x)
        expected = full.blocks(full.bn1(full.conv_stem(x))).mean(dim=(2, 3))  # ImageNet's, not the tuned stage's
        assert torch.allclose(feat, expected, atol=1e-5)
        assert torch.allclose(logits, student(x), atol=1e-5)
    with torch.no_grad():
        student.patch_embed.cnn.blocks[3][0].conv_pw.weight.add_(0.01)  # a frozen stage moved: refused
    assert not stem_is_imagenet(student)
    with pytest.raises(ValueError, match="some stage stays frozen"):
        _config().replace(stem_tuned_stages=5)
    with pytest.raises(ValueError, match="must keep the stride"):
        _config().replace(stem_tuned_stages=2)  # stage 3 ends at stride 8, the patch grid is 16
    with pytest.raises(ValueError, match="needs a CNN stem"):
        StudentConfig(stem_tuned_stages=1)


def test_unknown_fit_on_the_descriptor_and_both_backends_agree(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = sorted(p.name for p in image_folder.iterdir())
    files = sorted(image_folder.rglob("*.jpg"))
    samples = [Sample(str(f), names.index(f.parent.name)) for f in files]
    split = tmp_path / "split.json"
    save_split(split, names, [s for s in samples if not s.path.endswith(("6.jpg", "7.jpg"))], [s for s in samples if s.path.endswith(("6.jpg", "7.jpg"))], image_folder)
    cfg = _config(len(names))
    imagenet_stem = save_checkpoint(tmp_path / "imagenet_stem.pt", DistilledViT(cfg).eval(), names, student_preprocess(cfg))
    args = ["unknown-fit", "--split", str(split), "--method", "mahalanobis", "--features", "imagenet"]
    assert train_main([*args, "--checkpoint", str(imagenet_stem), "--out", str(tmp_path / "fitted.pt")]) == 0
    fitted = load_checkpoint(tmp_path / "fitted.pt")
    assert fitted.unknown["features"] == "imagenet" and fitted.meta["unknown_refit"]["features"] == "imagenet"
    assert np.asarray(fitted.unknown["means"]).shape == (len(names), 320)  # the descriptor's size, not d_model's
    img = [cv2.imread(str(files[0])), cv2.imread(str(files[-1]))]
    torch_clf, onnx_clf = load_classifier(tmp_path / "fitted.pt", "torch"), load_classifier(tmp_path / "fitted.pt", "onnx")
    assert torch_clf.logits_and_features(img)[1].shape == (2, 320)
    for a, b in zip(torch_clf.predict(img), onnx_clf.predict(img)):  # the descriptor is inside the exported graph too
        assert a.label == b.label and a.unknown == pytest.approx(b.unknown, abs=1e-3)
    assert inference_net(fitted).descriptor is not None and inference_net(load_checkpoint(imagenet_stem)).descriptor is None
    assert fitted.unknown["descriptor_blocks"] == 5
    assert train_main([*args, "--checkpoint", str(imagenet_stem), "--descriptor-blocks", "1", "--out", str(tmp_path / "one.pt")]) == 0
    one = load_checkpoint(tmp_path / "one.pt")
    assert one.unknown["descriptor_blocks"] == 1 and np.asarray(one.unknown["means"]).shape == (len(names), 192)
    a, b = load_classifier(tmp_path / "one.pt", "torch").predict(img), load_classifier(tmp_path / "one.pt", "onnx").predict(img)
    assert [p.unknown for p in a] == pytest.approx([p.unknown for p in b], abs=1e-3)
    assert train_main(["unknown-fit", "--split", str(split), "--method", "mahalanobis", "--checkpoint", str(imagenet_stem), "--descriptor-blocks", "1"]) == 2
    assert "--descriptor-blocks goes with --features imagenet" in capsys.readouterr().err

    moved = DistilledViT(cfg).eval()
    with torch.no_grad():
        moved.patch_embed.cnn.conv_stem.weight.mul_(1.1)  # a stem fine-tuning has changed
    moved_path = save_checkpoint(tmp_path / "moved.pt", moved, names, student_preprocess(cfg))
    assert train_main([*args, "--checkpoint", str(moved_path)]) == 2
    assert "continues the ImageNet network's own stem" in capsys.readouterr().err
    with pytest.raises(ValueError, match="linear patch embedding"):
        descriptor_for(StudentConfig(num_classes=3))
