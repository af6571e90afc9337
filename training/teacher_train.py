"""`wastesort-train teacher`: fine-tune the CNN teacher (default: ImageNet EfficientNet-Lite0).

The teacher trains on rendered views (training.views): most photos cut out and put on belts,
noise, gradients and plain surfaces, the rest on their own board, so it learns materials rather
than TrashNet's backdrop. It is validated on the photos as they are and on a fixed set of the
validation photos on other backdrops (`val_pasted_acc`), which no epoch trains on.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import FORMAT as CHECKPOINT_FORMAT
from model.checkpoint import checkpoint_from_payload
from model.preprocess import PreprocessConfig
from model.teacher import DEFAULT_TEACHER, TEACHER_ARCHS, TeacherSpec, build_teacher, save_teacher, teacher_from_payload

from .camera_degrade import VAL_CAMERA, VAL_CAMERA_SEED
from .data import get_split
from .loop import JsonlLog, TrainState, Timer, class_weights, load_state, make_loader, param_groups, predict_logits, resolve_device, save_state, seed_everything, train_epoch, warmup_cosine
from .view_data import Photos, PlainPhotos, RandomViews, SeededViews, load_photos, mask_store_for, view_seeds
from .views import ViewPolicy, view_policy

log = logging.getLogger(__name__)
VAL_PASTED_SEED = 987  # the fixed validation views on other backdrops (never trained on)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=TEACHER_ARCHS, default=DEFAULT_TEACHER, help="teacher architecture (default: %(default)s)")
    p.add_argument("--weights", type=Path, default=None, help="resnet50 only: a local ImageNet state dict")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--init", type=Path, default=None,
                   help="start from this fine-tuned teacher file (same architecture and classes; its input is kept) with a fresh schedule")
    p.add_argument("--height", type=int, default=None, help="input height (default: the architecture's own, see model/teacher.py)")
    p.add_argument("--width", type=int, default=None, help="input width (default: the architecture's own)")
    p.add_argument("--paste-share", type=float, default=ViewPolicy().p_paste,
                   help="share of training views that paste the cut-out item on a synthetic surface; the rest show the photo "
                        "on its own board (default: %(default)s)")


def evaluation_loaders(photos_val: Photos, pre: PreprocessConfig) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """(the validation photos as they are, the same photos once each on a fixed other backdrop)."""
    plain = make_loader(PlainPhotos(photos_val, pre), 64, False)
    pasted = make_loader(SeededViews(photos_val, view_seeds(len(photos_val.images), 1, VAL_PASTED_SEED), pre), 64, False)
    return plain, pasted


def camera_loader(photos_val: Photos, pre: PreprocessConfig) -> torch.utils.data.DataLoader:
    """The validation photos as a belt camera delivers them (training.camera_degrade.VAL_CAMERA):
    about the demo belt's item size, JPEG quality 50-80, fixed per photo."""
    return make_loader(PlainPhotos(photos_val, pre, VAL_CAMERA, VAL_CAMERA_SEED), 64, False)


def accuracy(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> float:
    logits, ys = predict_logits(model, loader, device)
    return float((logits.argmax(1) == ys).float().mean())


def run(args: argparse.Namespace) -> dict[str, float]:
    seed_everything(args.seed)
    device = resolve_device(args.device)
    run_dir: Path = args.run_dir
    names, train, val, skipped = get_split(args.data, run_dir, args.val_fraction, args.seed)
    init = load_init(args.init, args.arch, names) if args.init else None
    spec = init[1] if init else TeacherSpec.default_for(args.arch)
    if args.height or args.width:
        own = spec.preprocess
        spec = TeacherSpec(args.arch, dataclasses.replace(own, height=args.height or own.height, width=args.width or own.width))
    pre = spec.preprocess
    masks = mask_store_for(run_dir)
    photos_train = load_photos(train, (pre.height, pre.width), masks)
    photos_val = load_photos(val, (pre.height, pre.width), masks)
    train_ds = RandomViews(photos_train, pre, view_policy(args.paste_share), base_seed=args.seed)
    train_dl = make_loader(train_ds, args.batch_size, True, args.balance, args.workers)
    val_plain, val_pasted = evaluation_loaders(photos_val, pre)
    val_camera = camera_loader(photos_val, pre)
    # channels-last runs the depthwise convolutions about 1.5x faster on CPU (measured: 2.5 s against 3.5-4.5 s a batch of 32)
    model = (init[0] if init else build_teacher(len(names), args.weights, arch=args.arch)).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=args.lr)
    total = args.epochs * len(train_dl)
    sched = warmup_cosine(opt, min(len(train_dl), total // 5), total)
    weights = class_weights(train_ds.labels, len(names)).to(device) if args.balance == "weights" else None
    state, ckpt_path, logger = TrainState(), run_dir / "teacher_state.pt", JsonlLog(run_dir / "teacher_log.jsonl")
    if args.resume and ckpt_path.is_file():
        state, _ = load_state(ckpt_path, model, opt, sched)
        log.info("resumed teacher at epoch %d", state.epoch)

    def step_loss(batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch[0].to(device, memory_format=torch.channels_last), batch[1].to(device)
        out = model(x)
        return F.cross_entropy(out, y, weight=weights, label_smoothing=args.label_smoothing), out, y

    timer = Timer()
    rec: dict[str, float] = {}
    while state.epoch < args.epochs:
        train_loss, train_acc = train_epoch(model, train_dl, step_loss, opt, sched, f"teacher {state.epoch + 1}/{args.epochs}")
        state.step += len(train_dl)
        model.eval()
        state.epoch += 1
        rec = {"stage": "teacher", "arch": args.arch, "paste_share": args.paste_share, "epoch": state.epoch, "train_loss": train_loss, "train_acc": train_acc,
               "val_acc": accuracy(model, val_plain, device), "val_pasted_acc": accuracy(model, val_pasted, device),
               "val_camera_acc": accuracy(model, val_camera, device),
               "lr": sched.get_last_lr()[0], "elapsed_s": timer.elapsed()}
        logger.write(rec)
        log.info("%s", rec)
        # the last epoch is the teacher (a one-cycle schedule ends there); no pick by validation score
        save_teacher(run_dir / "teacher.pt", model, spec, names, meta={k: v for k, v in rec.items() if k != "stage"})
        save_state(ckpt_path, model, opt, sched, state)
    return {"val_acc": rec.get("val_acc", float("nan")), "val_pasted_acc": rec.get("val_pasted_acc", float("nan")), "skipped_images": len(skipped)}


def load_init(path: Path, arch: str, names: list[str]) -> tuple[torch.nn.Module, TeacherSpec]:
    """The teacher to continue from: refused when its architecture (a student file reads as
    "student") or class list differs from the run's."""
    model, spec, init_names = load_teacher_spec(path, torch.device("cpu"))
    if spec.arch != arch:
        raise ValueError(f"--init {path} is a {spec.arch} teacher, the run trains {arch} (pass --arch {spec.arch})")
    if list(init_names) != list(names):
        raise ValueError(f"--init {path} has classes {init_names}, the run's split has {names}")
    return model, spec


def load_teacher_spec(path: Path, device: torch.device) -> tuple[torch.nn.Module, TeacherSpec, list[str]]:
    """(eval-mode teacher, the input it expects, class names) from a teacher or student checkpoint.

    A student checkpoint (the single-file format the daemon loads) as teacher is self-distillation.
    """
    d = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(d, dict) and d.get("format") == CHECKPOINT_FORMAT:
        ckpt = checkpoint_from_payload(d, path)
        return ckpt.build_model().to(device).eval(), TeacherSpec("student", ckpt.preprocess), list(ckpt.class_names)
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a teacher checkpoint")
    model, spec, names = teacher_from_payload(d, path)
    return model.to(device).eval(), spec, names


def load_teacher(path: Path, device: torch.device, preprocess: PreprocessConfig | None = None) -> tuple[torch.nn.Module, list[str]]:
    """A teacher fed the run's own input (`preprocess`): it must have been trained on that input,
    since a teacher fed other input than it was trained on quietly teaches worse."""
    model, spec, names = load_teacher_spec(path, device)
    if preprocess is not None and spec.preprocess != preprocess:
        raise ValueError(f"teacher {path} was trained on input {spec.preprocess}, the run feeds {preprocess}")
    return model, names


__all__ = ["add_arguments", "load_teacher", "load_teacher_spec", "run"]
