"""`wastesort-train teacher`: fine-tune (or train from scratch) the ResNet-50 teacher."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from model.checkpoint import FORMAT as CHECKPOINT_FORMAT
from model.checkpoint import checkpoint_from_payload
from model.preprocess import PreprocessConfig
from model.teacher import build_teacher

from .augment import belt_augmentation
from .data import CachedImageDataset, get_split
from .loop import (
    JsonlLog,
    TrainState,
    Timer,
    class_weights,
    load_state,
    make_loader,
    predict_logits,
    progress,
    resolve_device,
    save_state,
    seed_everything,
    warmup_cosine,
)

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path, default=None, help="local ImageNet ResNet-50 state dict (optional)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=96)


def run(args: argparse.Namespace) -> dict[str, float]:
    seed_everything(args.seed)
    device = resolve_device(args.device)
    run_dir: Path = args.run_dir
    names, train, val, skipped = get_split(args.data, run_dir, args.val_fraction, args.seed)
    pre = PreprocessConfig(height=args.height, width=args.width)
    train_ds = CachedImageDataset(train, pre, belt_augmentation(args.height, args.width))
    val_ds = CachedImageDataset(val, pre)
    train_dl = make_loader(train_ds, args.batch_size, True, args.balance, args.workers)
    val_dl = make_loader(val_ds, 64, False)
    model = build_teacher(len(names), args.weights).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    total = args.epochs * len(train_dl)
    sched = warmup_cosine(opt, min(len(train_dl) * 2, total // 5), total)
    weights = class_weights(train_ds.labels, len(names)).to(device) if args.balance == "weights" else None
    state, ckpt_path, logger = TrainState(), run_dir / "teacher_state.pt", JsonlLog(run_dir / "teacher_log.jsonl")
    if args.resume and ckpt_path.is_file():
        state, _ = load_state(ckpt_path, model, opt, sched)
        log.info("resumed teacher at epoch %d", state.epoch)
    timer = Timer()
    while state.epoch < args.epochs:
        model.train()
        bar = progress(train_dl, f"teacher {state.epoch + 1}/{args.epochs}")
        correct = seen = 0
        loss_sum = 0.0
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = F.cross_entropy(out, y, weight=weights, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            state.step += 1
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        model.eval()
        logits, ys = predict_logits(model, val_dl, device)
        val_acc = float((logits.argmax(1) == ys).float().mean())
        state.epoch += 1
        rec = {"stage": "teacher", "epoch": state.epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen, "val_acc": val_acc, "lr": sched.get_last_lr()[0], "elapsed_s": timer.elapsed()}
        logger.write(rec)
        log.info("%s", rec)
        if val_acc >= state.best_metric:
            state.best_metric = val_acc
            torch.save({"state_dict": model.state_dict(), "class_names": names, "preprocess": pre.to_dict(), "val_acc": val_acc}, run_dir / "teacher.pt")
        save_state(ckpt_path, model, opt, sched, state)
    return {"best_val_acc": state.best_metric, "skipped_images": len(skipped)}


def load_teacher(path: Path, device: torch.device, preprocess: PreprocessConfig | None = None) -> tuple[torch.nn.Module, list[str]]:
    """A teacher for distillation: a ResNet-50 from `wastesort-train teacher`, or a trained student.

    A student checkpoint (the single-file format the daemon loads) as teacher is self-distillation:
    the shipped student is a much stronger teacher than a ResNet-50 trained from scratch here.
    A teacher fed other input than it was trained on (size, normalisation) quietly teaches worse,
    so when `preprocess` (the run's input) is given, the teacher's recorded one must match it.
    """
    d = torch.load(path, map_location="cpu", weights_only=True)
    model: torch.nn.Module
    if isinstance(d, dict) and d.get("format") == CHECKPOINT_FORMAT:
        ckpt = checkpoint_from_payload(d, path)
        model, names, own = ckpt.build_model(), list(ckpt.class_names), ckpt.preprocess
    else:
        model = build_teacher(len(d["class_names"]), imagenet=False)
        model.load_state_dict(d["state_dict"])
        names, own = list(d["class_names"]), (PreprocessConfig.from_dict(d["preprocess"]) if "preprocess" in d else None)
    if preprocess is not None and own is not None and own != preprocess:
        raise ValueError(f"teacher {path} was trained on input {own}, the run feeds {preprocess}")
    return model.to(device).eval(), names
