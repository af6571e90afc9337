"""Loss, teacher, preprocessing, checkpoints and the inference API with both backends."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet50

from model import DistillationLoss, load_classifier, save_checkpoint
from model.checkpoint import load_checkpoint
from model.config import tiny_config
from model.inference import export_onnx_file
from model.preprocess import PreprocessConfig, preprocess_bgr
from model.student import DistilledViT
from model.teacher import build_teacher

from conftest import random_bgr


def test_distillation_loss_equals_the_formula() -> None:
    torch.manual_seed(0)
    zs, zd, zt = torch.randn(5, 6), torch.randn(5, 6), torch.randn(5, 6)
    y = torch.randint(0, 6, (5,))
    tau, lam = 2.5, 0.3
    ce = -torch.log(torch.softmax(zs, 1)[torch.arange(5), y]).mean()
    pd, pt = torch.softmax(zd / tau, 1), torch.softmax(zt / tau, 1)
    kl = (pt * (pt.log() - pd.log())).sum(1).mean()
    expected = (1 - lam) * ce + lam * tau**2 * kl
    assert torch.allclose(DistillationLoss(tau, lam)(zs, zd, zt, y), expected, atol=1e-6)
    hard = (1 - lam) * ce + lam * F.cross_entropy(zd, zt.argmax(1))
    assert torch.allclose(DistillationLoss(tau, lam, hard=True)(zs, zd, zt, y), hard, atol=1e-6)
    with pytest.raises(ValueError):
        DistillationLoss(tau=0)


def test_teacher_from_scratch_without_download(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_cache"))
    with caplog.at_level("WARNING"):
        t = build_teacher(6)
    assert "from scratch" in caplog.text
    assert t.fc.out_features == 6
    assert t(torch.randn(1, 3, 64, 48)).shape == (1, 6)


def test_teacher_from_a_local_weights_file(tmp_path: Path) -> None:
    src = resnet50(weights=None)
    f = tmp_path / "r50.pth"
    torch.save(src.state_dict(), f)
    t = build_teacher(4, f)
    assert torch.equal(t.conv1.weight, src.conv1.weight)
    assert t.fc.out_features == 4
    with pytest.raises(FileNotFoundError):
        build_teacher(4, tmp_path / "missing.pth")


def test_loading_a_trained_teacher_neither_reads_imagenet_weights_nor_announces_training(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from torchvision.models import ResNet50_Weights

    from training.teacher_train import load_teacher

    cache = tmp_path / "hub"
    (cache / "checkpoints").mkdir(parents=True)
    (cache / "checkpoints" / Path(ResNet50_Weights.IMAGENET1K_V2.url).name).write_bytes(b"not a state dict")  # reading it would fail
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(cache))
    trained = build_teacher(3, imagenet=False)
    f = tmp_path / "teacher.pt"
    torch.save({"state_dict": trained.state_dict(), "class_names": ["a", "b", "c"]}, f)
    with caplog.at_level("WARNING"):
        loaded, names = load_teacher(f, torch.device("cpu"))
    assert names == ["a", "b", "c"] and torch.equal(loaded.fc.weight, trained.fc.weight)
    assert "from scratch" not in caplog.text
    with pytest.raises(pickle.UnpicklingError):  # while a teacher about to be trained does read the cache
        build_teacher(3)


def test_preprocess_handles_odd_inputs_and_rejects_bad_ones() -> None:
    cfg = PreprocessConfig(height=24, width=32)
    gray = np.full((10, 7), 128, np.uint8)
    bgra = np.zeros((50, 60, 4), np.uint8)
    out = preprocess_bgr([gray, bgra, random_bgr(300, 100)], cfg)
    assert out.shape == (3, 3, 24, 32) and out.dtype == np.float32
    # channel order: a pure-blue BGR image ends up with high value in the B (last RGB) channel
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 0] = 255
    x = preprocess_bgr([blue], cfg)[0]
    assert x[2].mean() > x[0].mean()
    with pytest.raises(ValueError, match="uint8"):
        preprocess_bgr([np.zeros((4, 4, 3), np.float32)], cfg)
    with pytest.raises(ValueError, match="empty"):
        preprocess_bgr([np.zeros((0, 4, 3), np.uint8)], cfg)
    lb = PreprocessConfig(height=24, width=32, resize="letterbox")
    tall = preprocess_bgr([np.full((100, 10, 3), 255, np.uint8)], lb)[0]
    assert tall[:, :, 0].max() < tall[:, :, 16].max()  # padded borders are darker than the image


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = DistilledViT(tiny_config()).eval()
    names = ["a", "b", "c", "d", "e", "f"]
    path = save_checkpoint(tmp_path / "m.pt", model, names, PreprocessConfig(24, 32), temperature=1.7, meta={"x": 1})
    ck = load_checkpoint(path)
    assert ck.class_names == names and ck.temperature == 1.7 and ck.meta["x"] == 1 and ck.config == model.cfg
    imgs = [random_bgr(60, 80, s) for s in range(3)]
    clf = load_classifier(path)
    p1 = clf.predict(imgs)
    x = torch.from_numpy(preprocess_bgr(imgs, PreprocessConfig(24, 32)))
    with torch.no_grad():
        direct = torch.softmax(model(x) / 1.7, 1).numpy()
    got = np.array([[p.scores[n] for n in names] for p in p1])
    np.testing.assert_allclose(got, direct, atol=1e-6)
    assert [p.label for p in p1] == [names[i] for i in direct.argmax(1)]
    assert all(abs(p.confidence - max(p.scores.values())) < 1e-9 and 0 <= p.unknown <= 1 for p in p1)
    assert clf.predict([]) == []


def test_onnx_backend_agrees_with_torch(tiny_checkpoint: Path, tmp_path: Path) -> None:
    imgs = [random_bgr(120, 90, s) for s in range(5)]
    a = load_classifier(tiny_checkpoint, "torch").predict(imgs)
    b = load_classifier(tiny_checkpoint, "onnx").predict(imgs)
    onnx_file = export_onnx_file(tiny_checkpoint, tmp_path / "m.onnx")
    c = load_classifier(onnx_file, "onnx").predict(imgs)
    for pa, pb, pc in zip(a, b, c):
        for k in pa.scores:
            assert abs(pa.scores[k] - pb.scores[k]) <= 1e-4
            assert abs(pa.scores[k] - pc.scores[k]) <= 1e-4
        assert abs(pa.unknown - pb.unknown) <= 1e-4


def test_load_errors_are_clear(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_classifier(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_classifier(junk)
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(ValueError, match="not a wastesort"):
        load_classifier(other)
    with pytest.raises(ValueError, match="backend"):
        load_classifier(tiny_checkpoint, "tensorrt")  # type: ignore[arg-type]


def test_int8_backend_stays_close_to_float(tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    imgs = [random_bgr(80, 60, s) for s in range(4)]
    a = load_classifier(tiny_checkpoint, "torch").predict(imgs)
    with caplog.at_level(logging.INFO):
        q = load_classifier(tiny_checkpoint, "onnx-int8")
    # the quantiser's static-quantisation advice must not reach the daemon's log as a WARNING at every start
    assert not [r for r in caplog.records if "pre-processing before quantization" in r.getMessage()]
    assert q.backend == "onnx-int8"
    for pa, pq in zip(a, q.predict(imgs)):
        assert max(abs(pa.scores[k] - pq.scores[k]) for k in pa.scores) < 0.02


def test_int8_export_keeps_the_first_projection_in_float(tiny_checkpoint: Path) -> None:
    """The first block's qkv reads the un-normalised embedding sum: it stays float, the rest is int8."""
    import onnx

    from model.inference import export_onnx_bytes, float_matmul_nodes, inference_net, quantize_onnx_int8

    ckpt = load_checkpoint(tiny_checkpoint)
    fp32 = export_onnx_bytes(inference_net(ckpt), ckpt.preprocess)
    assert float_matmul_nodes(fp32) == ["/blocks.0/attn/qkv/MatMul"]
    nodes = {n.name: n.op_type for n in onnx.load_from_string(quantize_onnx_int8(fp32)).graph.node}
    assert nodes["/blocks.0/attn/qkv/MatMul"] == "MatMul"  # untouched
    assert "/blocks.1/attn/qkv/MatMul" not in nodes  # replaced by its quantised form
    assert any(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in nodes.values())


def test_loading_a_classifier_leaves_numpy_one_blas_thread(tiny_checkpoint: Path) -> None:
    """A BLAS pool spinning after the per-item unknown score took the cores from ONNX Runtime."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # as numpy starts on a multi-core machine
        load_classifier(tiny_checkpoint, "onnx-int8")
        blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert blas and all(lib["num_threads"] == 1 for lib in blas)
