"""Training: data handling, the second-order meta step, and the whole CLI on a tiny real-image run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model import load_classifier
from model.config import tiny_config
from model.preprocess import PreprocessConfig
from model.student import DistilledViT
from training.cli import main as train_main
from training.data import CachedImageDataset, DataError, scan_image_folder, stratified_split
from training.meta import EpisodeSampler, meta_step
from training.metrics import compute_metrics, expected_calibration_error, fit_temperature


def test_scan_skips_unreadable_images_and_rejects_empty_classes(image_folder: Path) -> None:
    (image_folder / "glass" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (image_folder / "glass" / "notes.txt").write_text("hello")
    index = scan_image_folder(image_folder)
    assert len(index.samples) == 48
    assert {Path(p).name for p, _ in index.skipped} == {"broken.jpg", "notes.txt"}
    for f in (image_folder / "trash").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no readable images"):
        scan_image_folder(image_folder)
    with pytest.raises(DataError, match="not found"):
        scan_image_folder(image_folder / "missing")


def test_split_is_stratified_and_reproducible(image_folder: Path) -> None:
    samples = scan_image_folder(image_folder).samples
    tr1, va1 = stratified_split(samples, 0.25, seed=3)
    tr2, va2 = stratified_split(samples, 0.25, seed=3)
    assert tr1 == tr2 and va1 == va2
    assert not {s.path for s in tr1} & {s.path for s in va1}
    assert [sum(s.label == c for s in va1) for c in range(6)] == [2] * 6
    _, va3 = stratified_split(samples, 0.25, seed=4)
    assert va3 != va1


def test_meta_step_gives_the_noise_scales_a_second_order_gradient(image_folder: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    model = DistilledViT(cfg)
    ds = CachedImageDataset(scan_image_folder(image_folder).samples, PreprocessConfig(*cfg.image_size))
    ep = EpisodeSampler(ds, 6, rng=random.Random(0)).sample(seen_per_class=3, support=2, query=2)
    before = [p.detach().clone() for p in model.affine_parameters()]
    model_before = model.patch_embed.proj.weight.detach().clone()
    model_opt = torch.optim.SGD(model.backbone_parameters(), lr=0.1)
    affine_opt = torch.optim.SGD(model.affine_parameters(), lr=1.0)
    out = meta_step(model, ep, 0.5, model_opt, affine_opt)
    assert out["affine_grad_norm"] > 0
    after = model.affine_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "theta_gamma/theta_beta must change"
    assert not torch.equal(model.patch_embed.proj.weight, model_before), "the model must learn from L_cls"
    # the first-order shortcut (no create_graph) leaves no path from the thetas to L_pu
    model.train()
    model.set_feature_affine(True)
    cls_logits, _ = model(ep.seen_x)
    loss = torch.nn.functional.cross_entropy(cls_logits, ep.seen_y)
    g = torch.autograd.grad(loss, model.backbone_parameters(), allow_unused=True)
    assert all(x is None or not x.requires_grad for x in g)


def test_metrics_and_temperature() -> None:
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]]).numpy()
    labels = torch.tensor([0, 1, 1, 0]).numpy()
    m = compute_metrics(logits, labels, ["a", "b"])
    assert m.accuracy == 0.75 and m.confusion == [[2, 0], [1, 1]]
    assert m.per_class["b"]["recall"] == 0.5 and m.per_class["a"]["precision"] == pytest.approx(2 / 3)
    t = fit_temperature(logits, labels)
    assert t > 1.0  # over-confident logits get softened
    from training.metrics import softmax

    assert expected_calibration_error(softmax(logits, t), labels) < expected_calibration_error(softmax(logits), labels)


def test_reject_curve_applies_the_daemons_rule() -> None:
    from training.metrics import reject_curve

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    unknown = np.array([0.1, 0.2, 0.9, 0.3])  # the third item is rejected as unknown whatever its confidence
    labels = np.array([0, 1, 1, 0])
    rows = reject_curve(probs, unknown, labels, [0.0, 0.58, 0.95])
    assert [r["sorted_share"] for r in rows] == [0.75, 0.5, 0.0]
    assert rows[0]["sorted_accuracy"] == pytest.approx(2 / 3) and rows[1]["sorted_accuracy"] == 0.5
    assert rows[2]["sorted_accuracy"] is None


def test_the_whole_training_cli_on_a_tiny_run(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_config().to_dict()))
    common = ["--data", str(image_folder), "--run-dir", str(run), "--val-fraction", "0.25"]
    assert train_main(["teacher", *common, "--epochs", "1", "--height", "64", "--width", "48", "--batch-size", "8"]) == 0
    assert (run / "teacher.pt").is_file() and (run / "split.json").is_file()
    assert train_main(["teacher-cache", *common, "--views", "2"]) == 0
    views = run / "views.npz"
    assert views.is_file()
    assert train_main(["meta", *common, "--iterations", "2", "--iters-per-epoch", "1", "--config", str(cfg_file), "--seen-per-class", "3"]) == 0
    log = [json.loads(line) for line in (run / "meta_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2]
    assert {"sigma_gamma_mean", "sigma_gamma_std", "sigma_beta_min"} <= set(log[-1])
    assert train_main(["distill", *common, "--epochs", "2", "--batch-size", "8", "--views", str(views)]) == 0
    # resume: asking for one more epoch continues from epoch 2 rather than starting over
    assert train_main(["distill", *common, "--epochs", "3", "--batch-size", "8", "--views", str(views), "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "distill_log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    student = run / "student.pt"
    clf = load_classifier(student)
    assert clf.class_names == ["cardboard", "glass", "metal", "paper", "plastic", "trash"]
    assert clf.checkpoint.temperature > 0 and "val_accuracy" in clf.checkpoint.meta
    split = json.loads((run / "split.json").read_text())
    assert clf.checkpoint.meta["val_images"] == len(split["val"])  # what the accuracy was measured on
    img = cv2.imread(str(next((image_folder / "glass").iterdir())))
    assert clf.predict([img])[0].label in clf.class_names
    assert train_main(["evaluate", "--checkpoint", str(student), "--data", str(image_folder), "--json"]) == 0
    assert (run / "student_confusion.png").is_file()
    installed = tmp_path / "installed" / "default.pt"
    assert train_main(["export", "--checkpoint", str(student), "--install", str(installed)]) == 0
    assert installed.is_file() and student.with_suffix(".onnx").is_file()


def test_distill_ships_the_mean_of_the_last_epochs(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from model.checkpoint import load_checkpoint

    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_config().to_dict()))
    common = ["distill", "--data", str(image_folder), "--run-dir", str(run), "--val-fraction", "0.25", "--teacher", "none",
              "--config", str(cfg_file), "--batch-size", "8", "--epochs", "2"]
    assert train_main([*common, "--average-tail", "1.0"]) == 0
    state = torch.load(run / "distill_state.pt", map_location="cpu", weights_only=False)
    assert state["extra"]["average_window"] == [0, 2] and int(state["extra"]["average"]["n_averaged"]) == 2
    shipped = load_checkpoint(run / "student.pt")
    assert shipped.meta["distill"]["weights"] == "mean of epochs 1-2"
    name = "head.weight"
    assert torch.equal(shipped.state_dict[name], state["extra"]["average"][f"module.{name}"])
    assert not torch.equal(shipped.state_dict[name], state["model"][name])  # not simply the last epoch
    assert train_main([*common, "--average-tail", "0", "--out", str(run / "best.pt")]) == 0
    assert load_checkpoint(run / "best.pt").meta["distill"]["weights"].startswith("best epoch")
    assert train_main([*common, "--average-tail", "1.5"]) == 2
    assert "--average-tail must be a fraction" in capsys.readouterr().err


def test_distill_takes_a_trained_student_as_its_teacher(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Self-distillation: the teacher is a student checkpoint, run in eval mode on the same input."""
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.teacher import build_teacher
    from training.teacher_train import load_teacher

    names = sorted(d.name for d in image_folder.iterdir())
    cfg = tiny_config(num_classes=len(names))
    pre = PreprocessConfig(height=24, width=32)
    torch.manual_seed(1)
    teacher_file = save_checkpoint(tmp_path / "teacher_student.pt", DistilledViT(cfg).eval(), names, pre)
    teacher, t_names = load_teacher(teacher_file, torch.device("cpu"), pre)
    assert isinstance(teacher, DistilledViT) and not teacher.training and t_names == names
    x = torch.randn(2, 3, 24, 32)
    expected = load_checkpoint(teacher_file).build_model()(x)
    assert torch.allclose(teacher(x), expected)  # one (averaged-heads) logit tensor, as a ResNet teacher gives
    with pytest.raises(ValueError, match="was trained on input"):
        load_teacher(teacher_file, torch.device("cpu"), PreprocessConfig(height=32, width=32))
    resnet_file = tmp_path / "resnet.pt"  # the same check for a ResNet-50 teacher, which records its input too
    torch.save({"state_dict": build_teacher(len(names), imagenet=False).state_dict(), "class_names": names, "preprocess": PreprocessConfig(height=128, width=96).to_dict()}, resnet_file)
    assert load_teacher(resnet_file, torch.device("cpu"), PreprocessConfig(height=128, width=96))[1] == names
    with pytest.raises(ValueError, match="was trained on input"):
        load_teacher(resnet_file, torch.device("cpu"), pre)

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    run = tmp_path / "run"
    common = ["distill", "--data", str(image_folder), "--run-dir", str(run), "--val-fraction", "0.25",
              "--config", str(cfg_file), "--batch-size", "8", "--epochs", "1"]
    assert train_main([*common, "--teacher", str(teacher_file), "--aug-strength", "0.5"]) == 0
    recipe = load_checkpoint(run / "student.pt").meta["distill"]
    assert recipe["teacher"] == str(teacher_file) and recipe["aug_strength"] == 0.5
    assert train_main([*common, "--teacher", str(teacher_file), "--aug-strength", "1.5"]) == 2
    assert "--aug-strength must be in [0, 1]" in capsys.readouterr().err
    wide = save_checkpoint(tmp_path / "wide.pt", DistilledViT(tiny_config(num_classes=len(names), image_size=(32, 32))).eval(), names, PreprocessConfig(height=32, width=32))
    assert train_main([*common, "--teacher", str(wide), "--run-dir", str(tmp_path / "run2")]) == 2
    assert "was trained on input" in capsys.readouterr().err  # refused before training, not at the first batch


def test_unknown_fit_swaps_the_scorer_of_a_trained_checkpoint(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from model.checkpoint import load_checkpoint
    from model.inference import read_onnx_metadata

    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_config().to_dict()))
    assert train_main(["distill", "--data", str(image_folder), "--run-dir", str(run), "--val-fraction", "0.25", "--teacher", "none",
                       "--config", str(cfg_file), "--batch-size", "8", "--epochs", "1"]) == 0
    before = load_checkpoint(run / "student.pt")
    assert before.unknown["method"] == "msp"
    refit = tmp_path / "knn.pt"
    args = ["unknown-fit", "--checkpoint", str(run / "student.pt"), "--split", str(run / "split.json"), "--data", str(image_folder)]
    assert train_main([*args, "--method", "knn", "--out", str(refit)]) == 0
    after = load_checkpoint(refit)
    assert after.unknown["method"] == "knn" and len(after.unknown["bank"]) > 0
    assert after.meta["unknown_refit"]["method"] == "knn" and after.meta["val_accuracy"] == before.meta["val_accuracy"]
    for name, value in before.state_dict.items():  # the network itself is untouched
        assert torch.equal(value, after.state_dict[name])
    clf = load_classifier(refit, "onnx")  # the bank travels in the ONNX metadata as well
    img = cv2.imread(str(next((image_folder / "glass").iterdir())))
    assert 0.0 <= clf.predict([img])[0].unknown <= 1.0
    assert train_main(["export", "--checkpoint", str(refit)]) == 0
    assert read_onnx_metadata(refit.with_suffix(".onnx")).unknown["method"] == "knn"
    # fitted on rendered views as well (the line's items are not on TrashNet's board): another fit
    assert train_main([*args, "--method", "mahalanobis", "--out", str(tmp_path / "m0.pt")]) == 0
    assert train_main([*args, "--method", "mahalanobis", "--views", "1", "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "m1.pt")]) == 0
    plain, viewed = load_checkpoint(tmp_path / "m0.pt"), load_checkpoint(tmp_path / "m1.pt")
    assert viewed.meta["unknown_refit"]["views"] == 1 and any((tmp_path / "masks").iterdir())
    assert viewed.unknown["means"] != plain.unknown["means"] and viewed.unknown["centre"] != plain.unknown["centre"]
    assert train_main([*args, "--method", "mahalanobis", "--views", "1", "--camera", "1.0", "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "m2.pt")]) == 0
    camera = load_checkpoint(tmp_path / "m2.pt")  # the same views seen through a camera: other statistics
    assert camera.meta["unknown_refit"]["camera"] == 1.0 and camera.unknown["means"] != viewed.unknown["means"]
    assert train_main([*args, "--method", "mahalanobis", "--views", "1", "--camera", "1.5"]) == 2
    assert train_main([*args, "--method", "mahalanobis", "--views", "-1"]) == 2
    # a final fit on every photo carries its recipe's held-out temperature; the MSP threshold follows it
    assert train_main([*args, "--method", "msp", "--out", str(tmp_path / "t0.pt")]) == 0
    assert train_main([*args, "--method", "msp", "--temperature", "3.0", "--out", str(tmp_path / "t3.pt")]) == 0
    native, carried = load_checkpoint(tmp_path / "t0.pt"), load_checkpoint(tmp_path / "t3.pt")
    assert carried.temperature == 3.0 and native.temperature == before.temperature
    assert carried.meta["unknown_refit"]["temperature_fitted"] == before.temperature
    assert carried.unknown["centre"] != native.unknown["centre"]
    assert train_main([*args, "--method", "msp", "--temperature", "0"]) == 2
    with pytest.raises(SystemExit):  # argparse refuses a scorer it does not know
        train_main([*args, "--method", "oracle"])
    assert "invalid choice: 'oracle'" in capsys.readouterr().err


def test_training_cli_reports_a_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["teacher", "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "data folder not found" in capsys.readouterr().err


def test_unknown_scoring_helpers() -> None:
    import numpy as np

    from model.unknown import METHODS, unknown_scores
    from training.unknown_fit import auroc, feature_params, fit_scorer, rejected_at_keep

    known = np.array([0.1, 0.2, 0.3, 0.4])
    assert auroc(known, np.array([0.5, 0.6])) == 1.0
    assert auroc(known, np.array([0.0, 0.05])) == 0.0
    assert auroc(known, known) == 0.5
    assert rejected_at_keep(np.linspace(0, 1, 101), np.array([0.99, 0.5, 2.0]), 0.95) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    protos = np.eye(3, 8, dtype=np.float32)
    labels = rng.integers(0, 3, 200)
    feats = protos[labels] + 0.05 * rng.standard_normal((200, 8)).astype(np.float32)
    logits = feats[:, :3] * 5
    odd = np.zeros((5, 8), np.float32)
    odd[:, 7] = 1.0  # orthogonal to every class: an item of no trained class
    assert set(METHODS) == {"msp", "energy", "prototype", "mahalanobis", "knn"}
    for method in METHODS:
        p = fit_scorer(method, logits, feats, feature_params(method, feats, labels, 3), 1.0)
        s_known = unknown_scores(logits, feats, p, 1.0)
        assert abs((s_known < 0.5).mean() - 0.95) < 0.02, method  # the 0.5 threshold keeps 95% of known items
        if method in ("prototype", "mahalanobis", "knn"):  # the feature-space scorers see the odd items
            assert (unknown_scores(logits[:5], odd, p, 1.0) > 0.9).all(), method
    with pytest.raises(ValueError, match="not one of"):
        feature_params("oracle", feats, labels, 3)


def test_knn_bank_is_capped_per_class_so_checkpoints_stay_small() -> None:
    import numpy as np

    from training.unknown_fit import KNN_BANK_PER_CLASS, feature_params

    labels = np.repeat(np.arange(3), [500, 20, 300])
    bank = np.asarray(feature_params("knn", np.random.default_rng(1).standard_normal((820, 4)), labels, 3)["bank"])
    assert len(bank) == 2 * KNN_BANK_PER_CLASS + 20


def test_unknown_eval_cli_on_a_tiny_run(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.unknown_eval as ue

    monkeypatch.setattr(ue, "StudentConfig", lambda **kw: tiny_config(**kw))
    out = tmp_path / "u.json"
    rc = train_main(["unknown-eval", "--data", str(image_folder), "--run-dir", str(tmp_path / "r"), "--val-fraction", "0.25", "--holdout", "trash", "--epochs", "1", "--batch-size", "8", "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["holdout"]["trash"]["n_unknown"] == 8
    for m in ("msp", "energy", "prototype", "mahalanobis", "knn"):
        assert 0.0 <= r["holdout"]["trash"][m]["auroc"] <= 1.0


def test_unknown_eval_saves_features_and_rescores_them_without_training(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.unknown_eval as ue

    monkeypatch.setattr(ue, "StudentConfig", lambda **kw: tiny_config(**kw))
    feats, out = tmp_path / "features", tmp_path / "u.json"
    common = ["unknown-eval", "--data", str(image_folder), "--run-dir", str(tmp_path / "r"), "--val-fraction", "0.25"]
    assert train_main([*common, "--holdout", "trash,glass", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--features-out", str(feats)]) == 0
    assert sorted(p.name for p in feats.iterdir()) == ["holdout_glass.npz", "holdout_trash.npz"]
    rescored = tmp_path / "again.json"
    assert train_main([*common, "--rescore", str(feats), "--out", str(rescored)]) == 0
    first, again = json.loads(out.read_text()), json.loads(rescored.read_text())
    for held in ("trash", "glass"):  # float16 features: the same table to within rounding
        for m in ("msp", "mahalanobis", "knn"):
            assert again["holdout"][held][m]["auroc"] == pytest.approx(first["holdout"][held][m]["auroc"], abs=0.02)
    assert "mean_knn" in again
    rule = again["holdout"]["trash"]["confidence_rule"]
    assert [r["confidence_threshold"] for r in rule] == [0.5, 0.6, 0.7, 0.8, 0.9]
    sorted_share = [r["known_sorted"] for r in rule]
    rejected = [r["unknown_rejected"] for r in rule]
    assert sorted_share == sorted(sorted_share, reverse=True) and rejected == sorted(rejected)  # a stricter threshold sorts less, rejects more
    assert train_main([*common, "--rescore", str(tmp_path / "empty")]) == 2  # a clear error, not a crash


def test_ablation_cli_runs_every_row_and_resumes(image_folder: Path, tmp_path: Path) -> None:
    run, abl = tmp_path / "run", tmp_path / "ablation"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_config().to_dict()))
    common = ["--data", str(image_folder), "--val-fraction", "0.25"]
    # the ablation's rows run their teacher online on the student's own input: a ResNet-50 at that input
    assert train_main(["teacher", *common, "--run-dir", str(run), "--epochs", "1", "--arch", "resnet50", "--height", "24", "--width", "32", "--batch-size", "8"]) == 0
    args = ["ablation", *common, "--run-dir", str(abl), "--teacher", str(run / "teacher.pt"), "--config", str(cfg_file),
            "--split", str(run / "split.json"), "--epochs", "1", "--meta-iters", "1", "--batch-size", "8"]
    assert train_main(args) == 0
    rows = json.loads((abl / "ablation.json").read_text())["rows"]
    assert list(rows) == ["full", "global", "mlp", "no-meta", "no-distill", "mobilenet", "teacher"]
    for r in rows.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["latency_ms"] > 0 and r["params"] > 0
    # the variants really differ: global attention has no window, the no-meta row has no transform
    assert json.loads((abl / "global" / "config.json").read_text())["window_radius"] is None
    assert json.loads((abl / "no-meta" / "config.json").read_text())["use_feature_affine"] is False
    assert not (abl / "no-meta" / "meta_student.pt").exists() and (abl / "full" / "meta_student.pt").is_file()
    assert rows["mobilenet"]["params"] != rows["full"]["params"]
    table = (abl / "ablation.md").read_text()
    assert table.count("\n") == 2 + len(rows)
    # finished rows are not trained again
    before = (abl / "full" / "student.pt").stat().st_mtime_ns
    assert train_main(args) == 0
    assert (abl / "full" / "student.pt").stat().st_mtime_ns == before


def test_ablation_rejects_an_unknown_row(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = tmp_path / "t.pt"
    teacher.write_bytes(b"x")
    code = train_main(["ablation", "--data", str(image_folder), "--run-dir", str(tmp_path / "a"), "--teacher", str(teacher), "--rows", "full,bogus"])
    assert code == 2 and "unknown ablation rows ['bogus']" in capsys.readouterr().err


def test_the_shared_epoch_loop_clips_every_stage_and_counts_accuracy() -> None:
    """train_epoch is the loop of teacher, distill, fine-tune, ablation and leave-one-class-out:
    a huge loss moves the weights by at most the shared clip norm, and accuracy is counted."""
    from training.loop import GRAD_CLIP, train_epoch, warmup_cosine

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)

    def step_loss(batch):  # type: ignore[no-untyped-def]
        logits = model(batch[0])
        return 1e4 * torch.nn.functional.cross_entropy(logits, batch[1]), logits, batch[1]

    with torch.no_grad():
        expected_acc = float((model(x).argmax(1) == y).float().mean())
    loss, acc = train_epoch(model, loader, step_loss, opt, warmup_cosine(opt, 0, 1), "test", show=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) == pytest.approx(GRAD_CLIP, rel=1e-4)
    assert acc == pytest.approx(expected_acc) and loss > 1e3
