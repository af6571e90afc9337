"""`wastesort-train finetune`: adapt a trained student to one site's belt, camera and light.

Why mix in the base dataset: a few hundred site crops alone would pull the model towards
the classes the site happened to see and it would forget the rest. Each epoch therefore
shows the site crops (repeated until they are about half of it) and a per-class sample of
the base training split. The held-out part of the site data and the base validation split
are scored before and after, so the report says what was gained and what was lost.

A class the model does not know (e.g. textile, from a few dozen crops) gets a new output
row in both heads, initialised from the mean feature of its crops (weight imprinting), so
it starts where the old rows are instead of from noise. The input preprocessing is always
the checkpoint's own: the model sees the site crops exactly as the daemon will show them.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.checkpoint import StudentCheckpoint, load_checkpoint, save_checkpoint
from model.descriptor import FEATURES_IMAGENET, feature_source
from model.loss import DistillationLoss
from model.student import DistilledViT
from model.unknown import METHODS

from .augment import belt_augmentation
from .data import CachedImageDataset, DataError, Sample, load_split, save_split, scan_image_folder, stratified_split
from .distill import optimiser_and_schedule, run_epoch
from .loop import class_weights, make_loader, predict_logits, resolve_device, seed_everything
from .metrics import fit_temperature
from .review import confirmed_files
from .teacher_train import load_teacher
from .student_init import freeze_stem
from .unknown_fit import fit_for_model

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", type=Path, required=True, help="the student checkpoint to start from (e.g. the installed model)")
    p.add_argument("--data", type=Path, required=True, help="site data: a review folder (review --out) or any ImageFolder")
    p.add_argument("--base", type=Path, default=None, help="the base dataset (ImageFolder) to mix in and to check forgetting on")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint with the same classes: distil from it as well")
    p.add_argument("--out", type=Path, default=None, help="fine-tuned checkpoint (default RUN_DIR/finetuned.pt)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/finetune"), help="where the splits and the checkpoint go")
    p.add_argument("--new-class", action="append", default=[], metavar="NAME", help="a site class the model does not know yet; repeatable")
    p.add_argument("--confirmed-only", action="store_true", help="review folder: only the images a person confirmed")
    p.add_argument("--method", choices=["fwt", "plain"], default="fwt", help="fwt: keep the meta-learned feature-wise transform active while training; plain: switch it off")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--site-val-fraction", type=float, default=0.25, help="site images held out to measure the gain")
    p.add_argument("--base-val-fraction", type=float, default=0.15, help="when the init checkpoint's split is not available")
    p.add_argument("--base-per-class", type=int, default=64, help="base training images per class mixed in (0 = all)")
    p.add_argument("--aug-strength", type=float, default=0.5)
    p.add_argument("--tau", type=float, default=3.0)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--unknown-method", choices=METHODS, default=None, help="default: the init checkpoint's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")


def sha256_file(path: Path) -> str:
    """The checksum the daemon publishes for a model file (and install writes next to it)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_init(path: Path) -> tuple[StudentCheckpoint, DistilledViT]:
    """The checkpoint and its model; a file of another kind or architecture is a plain error."""
    try:
        ckpt = load_checkpoint(path)
    except ValueError as e:
        raise ValueError(f"--init {path}: {e} (a teacher checkpoint goes to --teacher; --init takes a student "
                         f"checkpoint from `distill`, `finetune` or the installed model)") from None
    try:
        model = ckpt.build_model()
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"--init {path}: its weights are for another architecture than its config "
                         f"(config d_model={ckpt.config.d_model}, num_classes={ckpt.config.num_classes}): {first}") from None
    return ckpt, model


def site_samples(data: Path, model_classes: list[str], allowed_new: list[str], confirmed_only: bool) -> tuple[list[str], list[Sample], dict[str, Any]]:
    """Site samples labelled in the output class order (model classes, then the new ones)."""
    review_folder = (data / "labels.json").is_file() and (data / "images").is_dir()
    root = data / "images" if review_folder else data
    index = scan_image_folder(root)
    unknown = [c for c in index.class_names if c not in model_classes]
    not_allowed = [c for c in unknown if c not in allowed_new]
    if not_allowed:
        raise DataError(f"site data {root} has classes the model does not know: {not_allowed} (model classes: "
                        f"{model_classes}). A typo: rename the folder. A new class: add --new-class {not_allowed[0]}")
    stray = [c for c in allowed_new if c not in index.class_names]
    if stray:
        raise DataError(f"--new-class {stray[0]}: there is no folder {root / stray[0]} with its images")
    names = list(model_classes) + unknown
    samples = [Sample(s.path, names.index(index.class_names[s.label])) for s in index.samples]
    confirmed = confirmed_files(data) if review_folder else None
    if confirmed_only:
        if confirmed is None:
            raise DataError(f"--confirmed-only needs a review folder (review --out); {data} has no labels.json")
        samples = [s for s in samples if s.path in confirmed]
        if not samples:
            raise DataError(f"no confirmed images in {data}: confirm labels in corrections.txt and run review --apply")
    counts = {names[k]: sum(s.label == k for s in samples) for k in sorted({s.label for s in samples})}
    few = [c for c, n in counts.items() if n < 2]
    if few:
        raise DataError(f"site class {few[0]!r} has {counts[few[0]]} image: at least 2 are needed "
                        f"(one to train on, one to check)")
    info = {"site_data": str(data), "site_images": counts, "new_classes": unknown,
            "confirmed": None if confirmed is None else sum(s.path in confirmed for s in samples)}
    return names, samples, info


def base_samples(base: Path, names: list[str], init: StudentCheckpoint, run_dir: Path, val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample], Path]:
    """The base training and validation samples: the init checkpoint's own split when it is still
    there (the validation split it was selected on), else a new stratified split saved in run_dir."""
    index = scan_image_folder(base)
    extra = [c for c in index.class_names if c not in names]
    if extra:
        raise DataError(f"base dataset {base} has classes {extra} that the model does not have ({names})")
    remap = lambda samples, cls: [Sample(s.path, names.index(cls[s.label])) for s in samples]  # noqa: E731
    split = Path(str(init.meta.get("base_split") or init.meta.get("split") or ""))
    if split.is_file():
        try:
            cls, train, val = load_split(split, base)
            if all(Path(s.path).is_file() for s in train + val):
                return remap(train, cls), remap(val, cls), split
        except (ValueError, KeyError):
            pass
    train, val = stratified_split(index.samples, val_fraction, seed)
    split = run_dir / "base_split.json"
    save_split(split, index.class_names, train, val, base)
    return remap(train, index.class_names), remap(val, index.class_names), split


def per_class_subsample(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    if limit <= 0:
        return samples
    rng = random.Random(seed)
    out = []
    for label in sorted({s.label for s in samples}):
        group = [s for s in samples if s.label == label]
        rng.shuffle(group)
        out += group[:limit]
    return out


@torch.no_grad()
def add_classes(model: DistilledViT, n_new: int, new_images: list[torch.Tensor]) -> None:
    """Grow both heads by ``n_new`` rows, each imprinted with the mean feature of its class's crops."""
    model.eval()
    feats = [model.forward_features(x) for x in new_images]  # [(cls, dist)] per new class
    for which, head_name in enumerate(("head", "head_dist")):
        old: nn.Linear = getattr(model, head_name)
        norm = old.weight.norm(dim=1).mean()
        rows = [f[which].mean(0) for f in feats]
        rows = [r / r.norm().clamp_min(1e-6) * norm for r in rows]
        new = nn.Linear(old.in_features, old.out_features + n_new)
        new.weight.copy_(torch.cat([old.weight, torch.stack(rows)]))
        new.bias.copy_(torch.cat([old.bias, old.bias.mean().repeat(n_new)]))
        setattr(model, head_name, new)
    model.cfg = model.cfg.replace(num_classes=model.cfg.num_classes + n_new)


def accuracy(model: nn.Module, samples: list[Sample], pre: Any, device: torch.device) -> tuple[float | None, np.ndarray, np.ndarray]:
    """Accuracy over samples (labels in the output class order; a model with fewer classes simply
    cannot be right on the new ones), plus the logits and labels."""
    if not samples:
        return None, np.zeros((0, 0)), np.zeros(0)
    model.eval()
    logits, ys = predict_logits(model, make_loader(CachedImageDataset(samples, pre), 64, False), device)
    return round(float((logits.argmax(1) == ys).float().mean()), 4), logits.numpy(), ys.numpy()


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, model = load_init(args.init)
    pre = ckpt.preprocess  # never assumed: the input the model was trained on
    names, site, info = site_samples(args.data.resolve(), ckpt.class_names, args.new_class, args.confirmed_only)
    site_train, site_val = stratified_split(site, args.site_val_fraction, args.seed)
    save_split(run_dir / "site_split.json", names, site_train, site_val, Path("/"))
    base_train: list[Sample] = []
    base_val: list[Sample] = []
    base_split = None
    if args.base is not None:
        base_train, base_val, base_split = base_samples(args.base, names, ckpt, run_dir, args.base_val_fraction, args.seed)
        base_train = per_class_subsample(base_train, args.base_per_class, args.seed)

    site_before, _, _ = accuracy(model, site_val, pre, device)
    base_before, _, _ = accuracy(model, base_val, pre, device)
    new = names[len(ckpt.class_names):]
    if new:
        images = [CachedImageDataset([s for s in site_train if s.label == names.index(c)], pre) for c in new]
        add_classes(model, len(new), [torch.stack([ds[i][0] for i in range(len(ds))]) for ds in images])
    teacher = None
    if args.teacher is not None:
        teacher, t_names = load_teacher(args.teacher, device, pre)
        if t_names != names:
            raise ValueError(f"teacher {args.teacher} knows {t_names}, the fine-tuned model has {names}: "
                             f"a teacher must have the same classes (leave --teacher out for a new class)")
    repeat = max(1, round(len(base_train) / len(site_train))) if base_train else 1
    train = site_train * repeat + base_train
    train_ds = CachedImageDataset(train, pre, belt_augmentation(pre.height, pre.width, strength=args.aug_strength))
    train_dl = make_loader(train_ds, min(args.batch_size, len(train)), True)

    model = model.to(device)
    for p in model.affine_parameters():
        p.requires_grad_(False)
    features = feature_source(ckpt.unknown)
    if features == FEATURES_IMAGENET:  # the unknown-item descriptor continues this very stem: it must not move
        freeze_stem(model, model.cfg.frozen_stem_stages)
    model.set_feature_affine(args.method == "fwt")
    opt, sched = optimiser_and_schedule(model, args.lr, args.epochs, len(train_dl))
    weights = class_weights(train_ds.labels, len(names)).to(device)
    criterion = DistillationLoss(args.tau, args.lam if teacher is not None else 0.0, class_weight=weights)
    history = []
    for epoch in range(args.epochs):
        loss, acc = run_epoch(model, teacher, train_dl, criterion, opt, sched, device, f"finetune {epoch + 1}/{args.epochs}")
        history.append({"epoch": epoch + 1, "train_loss": round(loss, 4), "train_acc": round(acc, 4)})
        log.info("%s", history[-1])
    model.set_feature_affine(True)

    site_after, site_logits, site_ys = accuracy(model, site_val, pre, device)
    base_after, base_logits, base_ys = accuracy(model, base_val, pre, device)
    val_logits = np.concatenate([site_logits] + ([base_logits] if base_val else []))
    val_ys = np.concatenate([site_ys] + ([base_ys] if base_val else []))
    temperature = fit_temperature(val_logits, val_ys)
    method = args.unknown_method or (ckpt.unknown or {}).get("method", "msp")
    val_dl = make_loader(CachedImageDataset(site_val + base_val, pre), 64, False)
    unknown = fit_for_model(model, make_loader(CachedImageDataset(site_train + base_train, pre), 64, False), val_dl,
                            device, temperature, method, features, (ckpt.unknown or {}).get("descriptor_blocks"))
    report = {
        "site_val_accuracy_before": site_before, "site_val_accuracy_after": site_after,
        "base_val_accuracy_before": base_before, "base_val_accuracy_after": base_after,
        "site_train": len(site_train), "site_val": len(site_val), "base_train": len(base_train), "base_val": len(base_val),
        "new_classes": new, "classes": names, "method": args.method,
    }
    out = args.out or run_dir / "finetuned.pt"
    meta = {
        "data": str(args.base) if args.base else ckpt.meta.get("data"),
        "base_split": str(base_split) if base_split else None,
        "val_accuracy": base_after if base_after is not None else site_after,
        "base_val_accuracy": base_after, "site_val_accuracy": site_after,
        "finetune": {**info, "init": str(args.init), "init_checksum": sha256_file(args.init), "method": args.method,
                     "epochs": args.epochs, "lr": args.lr, "teacher": str(args.teacher) if args.teacher else None,
                     "base": str(args.base) if args.base else None, "report": report, "history": history},
    }
    try:
        save_checkpoint(out, model.cpu(), names, pre, temperature=temperature, unknown=unknown, meta=meta)
    except OSError as e:
        Path(str(out) + ".tmp").unlink(missing_ok=True)
        raise ValueError(f"cannot write {out}: {e.strerror or e} (the fine-tuning result is lost; free space "
                         f"or pass --out on another disk)") from None
    return {**report, "checkpoint": str(out), "temperature": temperature}
