"""Rendered views, item cut-outs and the cached-teacher stream: reproducible, checked, really varied."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.config import tiny_config
from model.preprocess import PreprocessConfig
from model.student import DistilledViT
from training.cutout import MaskStore, item_mask
from training.loop import param_groups
from training.student_init import EpochViews
from training.view_cache import ViewCache
from training.view_data import Photos, SeededViews, view_seeds
from training.views import ViewPolicy, render_view, view_policy


def _board_with_disc() -> tuple[np.ndarray, np.ndarray]:
    """A light, slightly shaded board with a dark-red disc: a photo whose true mask is known."""
    yy, xx = np.mgrid[0:256, 0:192]
    board = np.clip(215 + (xx / 192 * 20) - (yy / 256 * 10), 0, 255).astype(np.uint8)
    img = np.dstack([board, board, board])
    truth = np.zeros((256, 192), np.uint8)
    cv2.circle(truth, (96, 140), 55, 255, -1)
    img[truth > 0] = (40, 40, 150)
    return img, truth


def test_item_mask_finds_the_item_on_its_board() -> None:
    img, truth = _board_with_disc()
    mask = item_mask(img) > 127
    t = truth > 0
    iou = (mask & t).sum() / (mask | t).sum()
    assert iou > 0.85
    # a photo filled by the item (no board at its border) is kept whole rather than cut to a sliver
    busy = np.random.default_rng(0).integers(0, 256, (256, 192, 3), dtype=np.uint8)
    assert (item_mask(busy) == 255).all()


def test_mask_store_computes_once_and_reuses(tmp_path: Path) -> None:
    img, _ = _board_with_disc()
    store = MaskStore(tmp_path / "masks")
    first = store.get("/data/x.jpg", img)
    png = store.path_for("/data/x.jpg")
    assert png.is_file()
    cv2.imwrite(str(png), np.zeros_like(first))  # what is stored is what is returned next time
    assert (store.get("/data/x.jpg", img) == 0).all()


def test_a_view_is_a_pure_function_of_its_seed_and_leaves_the_board() -> None:
    img, truth = _board_with_disc()
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    a = render_view(rgb, truth, 123, (256, 192))
    assert np.array_equal(a, render_view(rgb, truth, 123, (256, 192)))
    assert not np.array_equal(a, render_view(rgb, truth, 124, (256, 192)))
    pasted = ViewPolicy(p_paste=1.0, colour=0.0)
    corners = [render_view(rgb, truth, s, (256, 192), pasted)[:8, :8].mean() for s in range(12)]
    assert min(corners) < 150  # the light board (>= 205) is replaced by other surfaces
    assert np.std(corners) > 10  # ... and they differ from view to view
    photo_only = view_policy(0.0)
    assert photo_only.p_paste == 0.0 and photo_only.p_clutter == ViewPolicy().p_clutter
    # with no pasted views, the board stays wherever the view neither rotates nor shrinks onto the belt margin
    boards = [render_view(rgb, truth, s, (256, 192), photo_only)[:8, :8].mean() for s in range(12)]
    assert sum(b > 190 for b in boards) >= 6
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="paste share"):
            view_policy(bad)


def _photos(n: int = 4) -> Photos:
    img, truth = _board_with_disc()
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return Photos([rgb] * n, [truth] * n, list(range(n)), (256, 192))


def test_seeded_views_replay_the_teachers_targets_and_cycle_through_every_view() -> None:
    photos = _photos()
    seeds = view_seeds(4, 3, base_seed=7)
    assert np.array_equal(seeds, view_seeds(4, 3, base_seed=7)) and len(np.unique(seeds)) == 12
    targets = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    pre = PreprocessConfig(height=32, width=24)
    views = SeededViews(photos, seeds, pre, targets=targets)
    x, y, t = views[5]  # photo 1, view 2
    assert x.shape == (3, 32, 24) and y == 1 and torch.equal(t, torch.from_numpy(targets[1, 2]))
    assert torch.equal(views[5][0], x)  # the same pixels every time
    stream = EpochViews(views)
    seen = set()
    for epoch in range(3):
        stream.set_epoch(epoch)
        seen |= {tuple(stream[i][2].tolist()) for i in range(4)}
    assert len(seen) == 12  # three epochs went through all K views of every photo
    with pytest.raises(ValueError, match="do not match"):
        SeededViews(photos, seeds, pre, targets=targets[:, :2])


def test_view_cache_refuses_another_split(tmp_path: Path) -> None:
    cache = ViewCache(view_seeds(2, 2, 0), np.zeros((2, 2, 3), np.float32), ["a", "b", "c"], ["p0", "p1"], "teacher.pt")
    cache.save(tmp_path / "views.npz")
    loaded = ViewCache.load(tmp_path / "views.npz")
    assert np.array_equal(loaded.seeds, cache.seeds) and loaded.class_names == ["a", "b", "c"]
    loaded.check_matches(["a", "b", "c"], ["p0", "p1"])
    with pytest.raises(ValueError, match="classes"):
        loaded.check_matches(["b", "a", "c"], ["p0", "p1"])
    with pytest.raises(ValueError, match="another training split"):
        loaded.check_matches(["a", "b", "c"], ["p0", "p2"])
    with pytest.raises(FileNotFoundError, match="teacher-cache"):
        ViewCache.load(tmp_path / "missing.npz")
    assert loaded.paste_share == ViewPolicy().p_paste  # the default view family
    ViewCache(cache.seeds, cache.logits, cache.class_names, cache.photo_paths, "t.pt", paste_share=0.4).save(tmp_path / "p4.npz")
    assert ViewCache.load(tmp_path / "p4.npz").policy.p_paste == 0.4  # later passes render the views it was made from
    old = dict(np.load(tmp_path / "views.npz"))
    del old["paste_share"]
    np.savez(tmp_path / "old.npz", **old)  # a cache written before --paste-share rendered with the default
    assert ViewCache.load(tmp_path / "old.npz").paste_share == ViewPolicy().p_paste


def test_no_weight_decay_on_norms_biases_tokens_and_positions() -> None:
    model = DistilledViT(tiny_config())
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "dist_token", "pos_embed", "head.bias", "blocks.0.norm1.weight"} <= no_decay_names
    assert "head.weight" in {names[id(p)] for p in decay["params"]} and decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))



def test_the_no_distillation_row_ignores_the_stored_teacher_logits() -> None:
    """`distill --teacher none` on a view cache (the ablation's no-distillation row): the batches
    still carry the stored teacher logits, and the loss must not depend on them."""
    from model.loss import DistillationLoss
    from training.distill import run_epoch

    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls, self.dist = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.cls(x.flatten(1)), self.dist(x.flatten(1))

    torch.manual_seed(0)
    x, y = torch.randn(8, 4, 1, 1), torch.randint(0, 3, (8,))

    def mean_loss(teacher_logits: torch.Tensor, stored: bool) -> float:
        torch.manual_seed(1)
        model = TwoHeads()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        criterion = DistillationLoss(3.0, 0.5 if stored else 0.0)
        loss, _ = run_epoch(model, None, [(x, y, teacher_logits)], criterion, opt, sched, torch.device("cpu"), "t", show=False, use_stored_targets=stored)
        return loss

    a, b = torch.randn(8, 3) * 5, torch.randn(8, 3) * 5
    assert mean_loss(a, False) == pytest.approx(mean_loss(b, False))
    assert mean_loss(a, True) != pytest.approx(mean_loss(b, True))
    torch.manual_seed(1)
    model = TwoHeads()
    cls, dist = model(x)
    both_heads = torch.nn.functional.cross_entropy(cls, y) + torch.nn.functional.cross_entropy(dist, y)
    assert mean_loss(a, False) == pytest.approx(float(both_heads.detach()), rel=1e-5)


def test_frozen_stem_distillation_trains_from_stored_stem_outputs(image_folder: Path, tmp_path: Path) -> None:
    """teacher -> teacher-cache with the student's stem outputs -> distill from them: the shipped
    student's stem is the teacher's first stages, and its image path gives what it trained on."""
    import json

    from model.checkpoint import load_checkpoint
    from model.config import StudentConfig
    from training.cli import main as train_main
    from training.teacher_train import load_teacher_spec

    run = tmp_path / "run"
    common = ["--data", str(image_folder), "--run-dir", str(run), "--val-fraction", "0.25"]
    cfg = {"image_size": [64, 48], "patch_size": 16, "stem": "efficientnet_lite0", "stem_stages": 5, "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "window_radius": 1}
    cfg_file = tmp_path / "hybrid.json"
    cfg_file.write_text(json.dumps(cfg))
    assert train_main(["teacher", *common, "--epochs", "1", "--height", "64", "--width", "48", "--batch-size", "8"]) == 0
    assert train_main(["teacher-cache", *common, "--views", "2", "--student-config", str(cfg_file)]) == 0
    # the teacher scored by the same evaluation as a student, through its own input (issue 19: side by side)
    from training.evaluate import evaluate_checkpoint

    metrics, names, curve = evaluate_checkpoint(run / "teacher.pt", run / "split.json")
    val = json.loads((run / "split.json").read_text())["val"]
    assert metrics.n == len(val) and sum(map(sum, metrics.confusion)) == len(val) and len(curve) > 0
    teacher_net, spec, _ = load_teacher_spec(run / "teacher.pt", torch.device("cpu"))
    from model.preprocess import preprocess_bgr

    photos = [cv2.imread(str(Path(json.loads((run / "split.json").read_text())["root"]) / rel)) for rel, _ in val]
    with torch.no_grad():
        direct = teacher_net(torch.from_numpy(preprocess_bgr(photos, spec.preprocess))).argmax(1).numpy()
    assert metrics.accuracy == pytest.approx(float(np.mean(direct == np.asarray([y for _, y in val]))))
    assert train_main(["evaluate", "--checkpoint", str(run / "teacher.pt"), "--data", str(run / "split.json"), "--backend", "onnx"]) == 2
    stored = np.load(run / "stem_features.npy", mmap_mode="r")
    assert stored.shape == (36, 2, 112, 4, 3) and np.abs(stored.astype(np.float32)).sum() > 0
    args = [*common, "--views", str(run / "views.npz"), "--stem-features", str(run / "stem_features.npy"), "--config", str(cfg_file), "--epochs", "2", "--batch-size", "8"]
    assert train_main(["distill", *args]) == 0
    student = load_checkpoint(run / "student.pt")
    assert student.config.stem == "efficientnet_lite0" and student.meta["distill"]["stem_features"]
    teacher, _, _ = load_teacher_spec(run / "teacher.pt", torch.device("cpu"))
    model = student.build_model()
    assert torch.equal(model.patch_embed.cnn.conv_stem.weight, teacher.conv_stem.weight)  # frozen, taken over
    assert student.preprocess.mean[0] == pytest.approx(127 / 255)
    # stored outputs of another stem are refused rather than silently trained on
    info = json.loads((run / "stem_features.json").read_text())
    (run / "stem_features.json").write_text(json.dumps({**info, "stem_signature": "0" * 16}))
    assert train_main(["distill", *args, "--out", str(run / "other.pt")]) == 2
    assert StudentConfig.from_dict(info["student_config"]).grid_size == (4, 3)
    # the ImageNet stem instead of the teacher's: stored by a stem-only pass, taken over untouched by
    # distill, so the unknown-item descriptor (model/descriptor.py) can continue it
    from model.descriptor import stem_is_imagenet
    from model.efficientnet_lite import LiteStem

    (run / "stem_features.json").write_text(json.dumps(info))
    imagenet = run / "stem_imagenet.npy"
    assert train_main(["teacher-cache", *common, "--views", "2", "--student-config", str(cfg_file), "--stem-only", "--stem-source", "imagenet", "--stem-out", str(imagenet)]) == 0
    assert json.loads(imagenet.with_suffix(".json").read_text())["stem_source"] == "imagenet"
    assert not np.array_equal(np.load(imagenet), np.load(run / "stem_features.npy"))
    args = [*common, "--views", str(run / "views.npz"), "--stem-features", str(imagenet), "--config", str(cfg_file), "--epochs", "1", "--batch-size", "8"]
    assert train_main(["distill", *args, "--out", str(run / "imagenet_stem.pt")]) == 0
    model = load_checkpoint(run / "imagenet_stem.pt").build_model()
    assert stem_is_imagenet(model) and not torch.equal(model.patch_embed.cnn.conv_stem.weight, teacher.conv_stem.weight)
    assert train_main(["unknown-fit", "--checkpoint", str(run / "imagenet_stem.pt"), "--split", str(run / "split.json"), "--method", "mahalanobis", "--features", "imagenet"]) == 0
    assert load_checkpoint(run / "imagenet_stem.pt").unknown["features"] == "imagenet"
    # the last stem stage tuned (StudentConfig.stem_tuned_stages): the stored outputs are those of
    # the stages before it, distill trains it, and the descriptor still continues ImageNet's own
    tuned_file = tmp_path / "tuned.json"
    tuned_file.write_text(json.dumps({**cfg, "stem_tuned_stages": 1}))
    before_tuned = run / "stem_imagenet4.npy"
    assert train_main(["teacher-cache", *common, "--views", "2", "--student-config", str(tuned_file), "--stem-only", "--stem-source", "imagenet", "--stem-out", str(before_tuned)]) == 0
    assert np.load(before_tuned, mmap_mode="r").shape == (36, 2, 80, 4, 3)  # after stage 4: 80 channels, same grid
    args = [*common, "--views", str(run / "views.npz"), "--stem-features", str(before_tuned), "--config", str(tuned_file), "--epochs", "1", "--batch-size", "8"]
    assert train_main(["distill", *args, "--out", str(run / "tuned.pt")]) == 0
    tuned = load_checkpoint(run / "tuned.pt").build_model().eval()
    untouched = LiteStem("efficientnet_lite0", 5)
    cnn = tuned.patch_embed.cnn
    assert torch.equal(cnn.blocks[3][0].conv_pw.weight, untouched.blocks[3][0].conv_pw.weight)  # frozen
    assert not torch.equal(cnn.blocks[4][0].conv_pw.weight, untouched.blocks[4][0].conv_pw.weight)  # trained
    assert stem_is_imagenet(tuned)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.allclose(tuned(x), tuned.forward_from_stem(tuned.patch_embed.frozen_features(x)), atol=1e-5)
    assert train_main(["unknown-fit", "--checkpoint", str(run / "tuned.pt"), "--split", str(run / "split.json"), "--method", "mahalanobis", "--features", "imagenet"]) == 0
    assert load_checkpoint(run / "tuned.pt").unknown["descriptor_blocks"] == 8  # ImageNet's stage 5 (its own, not the tuned one), 6 and 7
    # the no-distillation ablation row: the same stored views, labels only; feature distillation is refused with it
    assert train_main(["distill", *args, "--teacher", "none", "--out", str(run / "labels_only.pt")]) == 0
    assert load_checkpoint(run / "labels_only.pt").meta["distill"]["teacher"] == "none"
    assert train_main(["distill", *args, "--teacher", "none", "--imagenet-features", str(run / "none.npy"), "--out", str(run / "x.pt")]) == 2
    # a warm start from the tuned student keeps its tuned stage (no reset to ImageNet's weights)
    assert train_main(["distill", *args, "--init", str(run / "tuned.pt"), "--lr", "0", "--out", str(run / "warm.pt")]) == 0
    warm = load_checkpoint(run / "warm.pt").build_model().patch_embed.cnn
    assert torch.equal(warm.blocks[4][0].conv_pw.weight, cnn.blocks[4][0].conv_pw.weight)
    # stored outputs of the whole stem do not fit a student that tunes its last stage
    args = [*common, "--views", str(run / "views.npz"), "--stem-features", str(imagenet), "--config", str(tuned_file), "--epochs", "1", "--batch-size", "8"]
    assert train_main(["distill", *args, "--out", str(run / "mismatch.pt")]) == 2
