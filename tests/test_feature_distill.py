"""Feature distillation from ImageNet features, the shipped recipe's leave-one-class-out run,
and continuing a fine-tuned teacher: end to end on real photos with tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.cli import main as train_main
from training.feature_distill import FeatureHead, feature_loss
from training.unknown_loco import KnownPhotos
from training.view_data import StemFeatureViews

HYBRID = {"image_size": [64, 48], "patch_size": 16, "stem": "efficientnet_lite0", "stem_stages": 5, "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "window_radius": 1}


def _tiny_teacher(image_folder: Path, tmp_path: Path) -> tuple[Path, list[str], Path]:
    """A one-epoch 64x48 teacher in tmp_path/run: (run dir, common arguments, hybrid config file)."""
    run = tmp_path / "run"
    common = ["--data", str(image_folder), "--run-dir", str(run), "--val-fraction", "0.25"]
    cfg_file = tmp_path / "hybrid.json"
    cfg_file.write_text(json.dumps(HYBRID))
    assert train_main(["teacher", *common, "--epochs", "1", "--height", "64", "--width", "48", "--batch-size", "8"]) == 0
    return run, common, cfg_file


def test_feature_loss_is_zero_for_the_same_direction_and_learnable() -> None:
    target = torch.randn(4, 1280)
    assert float(feature_loss(3.0 * target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(feature_loss(-target, target)) == pytest.approx(2.0, abs=1e-5)
    head = FeatureHead(8, 1280)
    x = torch.randn(16, 8)
    goal = head(x).detach() + 0.0
    other = FeatureHead(8, 1280)
    opt = torch.optim.Adam(other.parameters(), lr=1e-2)
    first = float(feature_loss(other(x), goal).detach())
    for _ in range(100):
        opt.zero_grad()
        loss = feature_loss(other(x), goal)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 5


def test_known_photos_drop_the_held_out_class_and_its_teacher_logit() -> None:
    feats = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2, 1, 1)
    logits = np.array([[[1, 2, 3]] * 2, [[4, 5, 6]] * 2, [[7, 8, 9]] * 2], np.float32)
    stream = StemFeatureViews(feats, [0, 1, 2], logits)
    known = KnownPhotos(stream, np.array([0, 2]), {0: 0, 2: 1}, [0, 2])
    assert len(known) == 4 and known.photo_labels == [0, 1]
    grid, label, t = known[3]  # photo 2 (now class 1), view 1
    assert label == 1 and t.tolist() == [7.0, 9.0] and torch.equal(grid, torch.from_numpy(feats[2, 1]))


def test_imagenet_features_distill_and_leave_one_class_out(image_folder: Path, tmp_path: Path) -> None:
    """teacher -> teacher-cache --imagenet-features -> distill --imagenet-features -> unknown-eval --views."""
    run, common, cfg_file = _tiny_teacher(image_folder, tmp_path)
    import shutil

    shutil.copy(run / "teacher.pt", tmp_path / "second.pt")
    assert train_main(["teacher-cache", *common, "--views", "2", "--student-config", str(cfg_file), "--imagenet-features", "--flip-average", "--extra-teacher", str(tmp_path / "second.pt")]) == 0
    from training.view_cache import ViewCache

    cache = ViewCache.load(run / "views.npz")
    assert cache.targets == "log-probabilities averaged over 2 teacher(s) and the mirror image"
    assert np.allclose(np.exp(cache.logits).sum(axis=2), 1.0, atol=1e-4)  # log probabilities of the mirror-averaged prediction
    # a third teacher added to the ensemble without rerunning the first two: same views, weighted 2:1
    merge = ["teacher-cache", *common, "--views", "2", "--teacher", str(tmp_path / "second.pt"), "--merge-with", str(run / "views.npz")]
    assert train_main([*merge, "--out", str(run / "merged.npz")]) == 0
    merged = ViewCache.load(run / "merged.npz")
    assert merged.teacher_count == 3 and np.array_equal(merged.seeds, cache.seeds) and merged.teacher == cache.teacher
    alone = torch.softmax(torch.from_numpy(ViewCache.load(run / "views.npz").logits), dim=2)
    assert train_main(["teacher-cache", *common, "--views", "2", "--teacher", str(tmp_path / "second.pt"), "--out", str(run / "third.npz")]) == 0
    third = torch.softmax(torch.from_numpy(ViewCache.load(run / "third.npz").logits), dim=2)
    assert torch.allclose(torch.exp(torch.from_numpy(merged.logits)), (2 * alone + third) / 3, atol=1e-5)
    assert train_main([*merge, "--out", str(run / "views.npz")]) == 2  # never overwrite what it reads
    assert train_main([*merge[:-4], "--views", "3", *merge[-4:], "--out", str(run / "x.npz")]) == 2  # other views
    assert train_main([*merge, "--paste-share", "0.4", "--out", str(run / "x.npz")]) == 2  # other view family
    assert merged.paste_share == cache.paste_share == 0.7
    targets = np.load(run / "imagenet_features.npy", mmap_mode="r")
    assert targets.shape == (36, 2, 1280) and np.abs(targets.astype(np.float32)).sum() > 0
    cached = ["--views", str(run / "views.npz"), "--stem-features", str(run / "stem_features.npy")]
    args = [*common, *cached, "--imagenet-features", str(run / "imagenet_features.npy"), "--config", str(cfg_file), "--epochs", "2", "--batch-size", "8"]
    assert train_main(["distill", *args]) == 0
    state = torch.load(run / "distill_state.pt", map_location="cpu", weights_only=False)
    assert state["extra"]["feature_head"]["proj.weight"].shape == (1280, 32)  # saved, so a resume keeps it
    meta = torch.load(run / "student.pt", map_location="cpu", weights_only=True)["meta"]["distill"]
    assert meta["imagenet_features"].endswith("imagenet_features.npy")
    # features whose record disagrees with them are refused
    record = run / "imagenet_features.json"
    good = record.read_text()
    record.write_text(json.dumps({**json.loads(good), "shape": [36, 3, 1280]}))
    assert train_main(["distill", *args, "--out", str(run / "y.pt")]) == 2
    record.write_text(good)
    # features without the stem outputs they belong to are refused
    assert train_main(["distill", *common, "--views", str(run / "views.npz"), "--imagenet-features", str(run / "imagenet_features.npy"), "--config", str(cfg_file), "--epochs", "1", "--out", str(run / "x.pt")]) == 2
    out = tmp_path / "loco.json"
    assert train_main(["unknown-eval", *common, *cached, "--imagenet-features", str(run / "imagenet_features.npy"), "--holdout", "glass", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--features-out", str(tmp_path / "f")]) == 0
    table = json.loads(out.read_text())
    assert table["recipe"] == "distilled from cached views + ImageNet features"
    row = table["holdout"]["glass"]
    assert row["n_unknown"] == 8 and 0.0 <= row["mahalanobis"]["auroc"] <= 1.0
    with np.load(tmp_path / "f" / "holdout_glass.npz") as z:
        assert z["known_logits"].shape[1] == 5 and z["train_features"].shape[1] == 32


def test_teacher_continues_from_a_fine_tuned_teacher_and_refuses_other_classes(image_folder: Path, tmp_path: Path) -> None:
    from training.teacher_train import load_teacher_spec

    run, _, _ = _tiny_teacher(image_folder, tmp_path)
    first, spec, _ = load_teacher_spec(run / "teacher.pt", torch.device("cpu"))
    (run / "teacher.pt").rename(tmp_path / "first.pt")
    run2 = tmp_path / "run2"
    again_args = ["--data", str(image_folder), "--run-dir", str(run2), "--val-fraction", "0.25", "--batch-size", "8"]
    assert train_main(["teacher", *again_args, "--epochs", "1", "--lr", "1e-9", "--init", str(tmp_path / "first.pt")]) == 0
    again, spec2, _ = load_teacher_spec(run2 / "teacher.pt", torch.device("cpu"))
    assert spec2 == spec  # the input of the file continued from, not the architecture's default
    assert torch.allclose(first.conv_stem.weight, again.conv_stem.weight, atol=1e-5)
    five = tmp_path / "five"
    for cls in sorted(p.name for p in image_folder.iterdir())[:5]:
        (five / cls).mkdir(parents=True)
        for f in (image_folder / cls).iterdir():
            (five / cls / f.name).write_bytes(f.read_bytes())
    assert train_main(["teacher", "--data", str(five), "--run-dir", str(tmp_path / "run3"), "--epochs", "1", "--init", str(tmp_path / "first.pt")]) == 2


def test_meta_stage_trains_from_stored_stem_outputs_and_moves_the_noise_scales(image_folder: Path, tmp_path: Path) -> None:
    from model.student import DistilledViT
    from model.config import StudentConfig

    run, common, cfg_file = _tiny_teacher(image_folder, tmp_path)
    assert train_main(["teacher-cache", *common, "--views", "2", "--student-config", str(cfg_file)]) == 0
    cached = ["--views", str(run / "views.npz"), "--stem-features", str(run / "stem_features.npy")]
    assert train_main(["meta", *common, *cached, "--config", str(cfg_file), "--iterations", "3", "--iters-per-epoch", "3", "--seen-per-class", "2", "--support", "1", "--query", "1", "--affine-lr", "0.1"]) == 0
    log = [json.loads(line) for line in (run / "meta_log.jsonl").read_text().splitlines()]
    assert log[-1]["iteration"] == 3 and log[-1]["affine_grad_norm"] > 0
    d = torch.load(run / "meta_student.pt", map_location="cpu", weights_only=True)
    fresh = DistilledViT(StudentConfig.from_dict(d["config"]))
    moved = [float((d["state_dict"][k] - v).abs().max()) for k, v in fresh.state_dict().items() if "theta_" in k]
    assert moved and max(moved) > 1e-3  # the learning-to-learn step reached the noise scales
    # another input size reuses the cache's views and teacher logits: only its stem outputs are made
    small = {**HYBRID, "image_size": [32, 48]}
    small_file = tmp_path / "small.json"
    small_file.write_text(json.dumps(small))
    assert train_main(["teacher-cache", *common, "--stem-only", "--student-config", str(small_file), "--stem-out", str(run / "stem_small.npy")]) == 0
    assert np.load(run / "stem_small.npy", mmap_mode="r").shape == (36, 2, 112, 2, 3) and (run / "stem_small.json").is_file()
    assert train_main(["distill", *common, "--views", str(run / "views.npz"), "--stem-features", str(run / "stem_small.npy"), "--config", str(small_file), "--init", str(tmp_path / "none.pt"), "--epochs", "1", "--out", str(run / "small.pt")]) == 2  # a missing init is an error
    assert train_main(["distill", *common, "--run-dir", str(tmp_path / "small_run"), "--views", str(run / "views.npz"), "--stem-features", str(run / "stem_small.npy"), "--config", str(small_file), "--epochs", "1"]) == 0
    # stem outputs without the cache they belong to are refused
    assert train_main(["meta", *common, "--stem-features", str(run / "stem_features.npy"), "--config", str(cfg_file), "--iterations", "1"]) == 2
