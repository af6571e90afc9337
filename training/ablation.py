"""`wastesort-train ablation`: what makes the student work, every row on the same split and budget.

Rows (each in its own folder under --run-dir, resumable row by row):
  full        meta (first training) + distillation (second training), the shipped architecture
  global      same, plain global attention instead of global + window
  mlp         same, a plain MLP instead of the convolutional feed-forward
  no-meta     no first training and no feature-wise transform, distillation from random init
  no-distill  meta, then the second training without a teacher (cross-entropy on both heads)
  mobilenet   torchvision MobileNetV3-small, same augmentation, optimiser, schedule and loss
  teacher     the run's ResNet-50 teacher, evaluated as trained (its own budget, stated)

Every student row gets `--meta-iters` meta-iterations (when it has the transform) and `--epochs`
epochs of the second training's recipe. Latency is the model's forward pass alone, batch 1, torch
eager, on the machine's cores (`wastesort bench` measures the full inference path).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.config import StudentConfig
from model.loss import DistillationLoss
from model.preprocess import PreprocessConfig

from . import distill, meta
from .augment import belt_augmentation
from .data import CachedImageDataset, get_split
from .loop import class_weights, make_loader, predict_logits, resolve_device, seed_everything
from .metrics import compute_metrics
from .teacher_train import load_teacher

log = logging.getLogger(__name__)

ROWS = ("full", "global", "mlp", "no-meta", "no-distill", "mobilenet", "teacher")
_VARIANT = {
    "full": {},
    "global": {"window_radius": None},
    "mlp": {"conv_ffn": False},
    "no-meta": {"use_feature_affine": False},
    "no-distill": {},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--epochs", type=int, default=8, help="second-training epochs for every row")
    p.add_argument("--meta-iters", type=int, default=40, help="first-training iterations for rows with the transform")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tau", type=float, default=3.0)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--teacher", type=Path, required=True, help="ResNet-50 teacher checkpoint (e.g. runs/main/teacher.pt)")
    p.add_argument("--config", type=Path, default=None, help="base StudentConfig JSON (default: the shipped config)")
    p.add_argument("--split", type=Path, default=None, help="split.json to copy into every row (default: make one)")


def forward_latency_ms(model: torch.nn.Module, image_size: tuple[int, int], runs: int = 40) -> float:
    """Median forward time, batch 1, eager, after warm-up."""
    from bench.timing import time_call

    model = model.eval().cpu()
    x = torch.randn(1, 3, *image_size)
    with torch.inference_mode():
        return float(np.median(time_call(lambda: model(x), 5, runs)))


def _base_config(args: argparse.Namespace, num_classes: int) -> StudentConfig:
    return meta.load_config(args.config, num_classes)


def _row_dir(args: argparse.Namespace, row: str) -> Path:
    d = args.run_dir / row
    d.mkdir(parents=True, exist_ok=True)
    if args.split is not None and not (d / "split.json").is_file():
        shutil.copy(args.split, d / "split.json")
    return d


def _stage_args(args: argparse.Namespace, stage: Any, run_dir: Path, **overrides: Any) -> argparse.Namespace:
    """A training stage's arguments: its own defaults, this command's common options, then overrides."""
    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    ns = p.parse_args([])
    for k in ("data", "val_fraction", "seed", "device", "balance", "threads", "workers"):
        setattr(ns, k, getattr(args, k))
    ns.run_dir, ns.resume = run_dir, True
    for k, v in overrides.items():
        setattr(ns, k, v)
    return ns


def _student_row(args: argparse.Namespace, row: str) -> dict[str, Any]:
    d = _row_dir(args, row)
    names, _, _, _ = get_split(args.data, d, args.val_fraction, args.seed)
    cfg = _base_config(args, len(names)).replace(**_VARIANT[row])
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    if cfg.use_feature_affine and not (d / "meta_student.pt").is_file():
        meta.run(_stage_args(args, meta, d, iterations=args.meta_iters, iters_per_epoch=max(1, args.meta_iters), config=d / "config.json"))
    result = distill.run(_stage_args(
        args, distill, d, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, tau=args.tau, lam=args.lam,
        teacher=Path("none") if row == "no-distill" else args.teacher, out=d / "student.pt", config=d / "config.json",
        average_tail=0.0,  # every row, MobileNet's too, keeps its best epoch: one selection rule for the table
    ))
    model = load_checkpoint(d / "student.pt").build_model()
    return {"accuracy": result["val_accuracy"], "macro_f1": result["val_macro_f1"], "latency_ms": forward_latency_ms(model, cfg.image_size),
            "params": sum(p.numel() for p in model.parameters())}


def _mobilenet_row(args: argparse.Namespace) -> dict[str, Any]:
    """MobileNetV3-small through the second training's recipe (its one head plays both heads)."""
    from torchvision.models import mobilenet_v3_small

    d = _row_dir(args, "mobilenet")
    device = resolve_device(args.device)
    names, train, val, _ = get_split(args.data, d, args.val_fraction, args.seed)
    size = _base_config(args, len(names)).image_size
    pre = PreprocessConfig(height=size[0], width=size[1])
    net = mobilenet_v3_small(num_classes=len(names))
    # torchvision's BN momentum (0.01) suits ImageNet-length runs; after a few hundred steps the running
    # statistics are still mostly their initial values and eval-mode accuracy collapses (measured: 0.21).
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1  # PyTorch's default
    net = net.to(device)
    teacher, _ = load_teacher(args.teacher, device)
    train_ds = CachedImageDataset(train, pre, belt_augmentation(*size))
    train_dl = make_loader(train_ds, args.batch_size, True, args.balance)
    val_dl = make_loader(CachedImageDataset(val, pre), 64, False)
    opt, sched = distill.optimiser_and_schedule(net, args.lr, args.epochs, len(train_dl))
    weights = class_weights(train_ds.labels, len(names)).to(device) if args.balance == "weights" else None
    criterion = DistillationLoss(args.tau, args.lam, class_weight=weights)
    best, best_logits, ys = -1.0, None, None
    for epoch in range(args.epochs):
        distill.run_epoch(net, teacher, train_dl, criterion, opt, sched, device, f"mobilenet {epoch + 1}/{args.epochs}")
        logits, ys = predict_logits(net.eval(), val_dl, device)
        acc = float((logits.argmax(1) == ys).float().mean())
        log.info("mobilenet epoch %d val_acc %.4f", epoch + 1, acc)
        if acc >= best:
            best, best_logits = acc, logits
    m = compute_metrics(best_logits.numpy(), ys.numpy(), names)
    return {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "latency_ms": forward_latency_ms(net, size), "params": sum(p.numel() for p in net.parameters())}


def _teacher_row(args: argparse.Namespace) -> dict[str, Any]:
    d = _row_dir(args, "teacher")
    device = resolve_device(args.device)
    names, _, val, _ = get_split(args.data, d, args.val_fraction, args.seed)
    teacher, t_names = load_teacher(args.teacher, device)
    if t_names != names:
        raise ValueError(f"teacher classes {t_names} differ from the data's {names}")
    size = _base_config(args, len(names)).image_size
    logits, ys = predict_logits(teacher, make_loader(CachedImageDataset(val, PreprocessConfig(*size)), 64, False), device)
    m = compute_metrics(logits.numpy(), ys.numpy(), names)
    return {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "latency_ms": forward_latency_ms(teacher, size), "params": sum(p.numel() for p in teacher.parameters()),
            "note": f"own budget: {args.teacher}"}


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| row | val accuracy | val macro-F1 | forward latency, batch 1 (ms) | parameters |", "| --- | --- | --- | --- | --- |"]
    for row, r in results.items():
        lines.append(f"| {row} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['latency_ms']:.1f} | {r['params'] / 1e6:.2f} M |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = sorted(set(rows) - set(ROWS))
    if bad:
        raise ValueError(f"unknown ablation rows {bad}; choose from {list(ROWS)}")
    if not args.teacher.is_file():
        raise FileNotFoundError(f"teacher checkpoint not found: {args.teacher}")
    out = args.run_dir / "ablation.json"
    results: dict[str, Any] = json.loads(out.read_text())["rows"] if out.is_file() else {}
    for row in rows:
        if row in results:
            log.info("ablation row %s already done: %s", row, results[row])
            continue
        seed_everything(args.seed)
        t0 = time.monotonic()
        if row == "mobilenet":
            results[row] = _mobilenet_row(args)
        elif row == "teacher":
            results[row] = _teacher_row(args)
        else:
            results[row] = _student_row(args, row)
        results[row]["wall_s"] = time.monotonic() - t0
        log.info("ablation row %s: %s", row, results[row])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"epochs": args.epochs, "meta_iters": args.meta_iters, "rows": results}, indent=1))
    (args.run_dir / "ablation.md").write_text(markdown_table(results) + "\n")
    return {"epochs": args.epochs, "meta_iters": args.meta_iters, "rows": results}
