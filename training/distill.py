"""`wastesort-train distill`: the second training -- distil the student from the CNN teacher.

Starts from the meta-trained weights (run_dir/meta_student.pt), keeps the meta-learned noise
scales frozen (the transform stays active in training mode as a learned feature augmentation),
and minimises the soft distillation loss with AdamW, linear warm-up and cosine decay. The teacher
runs in eval mode under no_grad on the same augmented batch. The best epoch (validation
accuracy) is written as a full single-file checkpoint with a fitted temperature.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import torch
from torch.optim.swa_utils import AveragedModel

from model.checkpoint import save_checkpoint
from model.config import StudentConfig
from model.loss import DistillationLoss
from model.preprocess import PreprocessConfig
from model.student import DistilledViT, inference_logits
from model.teacher import DEFAULT_TEACHER, TEACHER_INPUTS
from model.unknown import METHODS

from .augment import belt_augmentation
from .data import CachedImageDataset, get_split
from .loop import JsonlLog, TrainState, Timer, class_weights, load_state, make_loader, param_groups, predict_logits, save_state, seed_everything, train_epoch, warmup_cosine
from .student_init import EpochViews, FromStem, cached_view_dataset, copy_stem_from_teacher, freeze_stem, stem_feature_dataset, stem_for_features, student_preprocess
from .teacher_train import accuracy, camera_loader, evaluation_loaders, load_teacher
from .feature_distill import FeatureHead, FromStemWithFeatures, WithFeatureTargets, feature_loss, load_feature_targets
from .view_cache import ViewCache
from .view_data import load_photos, mask_store_for
from .metrics import compute_metrics, fit_temperature
from .distributed import init_distributed
from .unknown_fit import fit_for_model

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tau", type=float, default=3.0)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--hard", action="store_true", help="hard-label distillation variant")
    p.add_argument("--aug-strength", type=float, default=1.0, help="scale of the belt augmentation (rotation, margin, colour, blur probabilities and ranges); flips and crops stay")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default run_dir/teacher.pt): a ResNet-50 from `teacher`, or a trained student checkpoint (self-distillation); 'none' = no distillation")
    p.add_argument("--init", type=Path, default=None, help="student init (default run_dir/meta_student.pt if present)")
    p.add_argument("--out", type=Path, default=None, help="final checkpoint (default run_dir/student.pt)")
    p.add_argument("--config", type=Path, default=None, help="StudentConfig JSON when there is no meta init")
    p.add_argument("--average-tail", type=float, default=0.1, help="ship the mean of the weights at the end of the last FRACTION of the epochs (at least the last epoch); 0: the best epoch by validation accuracy instead, which tunes on the validation split")
    p.add_argument("--views", type=Path, default=None, help="view cache from `teacher-cache` (run_dir/views.npz): the student replays those views against the stored teacher logits, one view per photo per epoch; the teacher is not run")
    p.add_argument("--stem-features", type=Path, default=None, help="with --views: the stored stem outputs of those views (teacher-cache --student-config); the stem stays frozen at the teacher's first stages and the student trains from them, rendering nothing")
    p.add_argument("--stem-from-teacher", type=Path, default=None, help="a fine-tuned EfficientNet-Lite teacher whose first stages initialise the student's CNN stem (same variant)")
    p.add_argument("--freeze-stem-stages", type=int, default=2, help="CNN stem: keep the stem convolution and this many first stages fixed (their ImageNet edges and textures need no retraining)")
    p.add_argument("--imagenet-features", type=Path, default=None, help="with --stem-features: the stored ImageNet features of the same views (teacher-cache --imagenet-features); the class-token embedding also learns to predict them (training.feature_distill)")
    p.add_argument("--feature-weight", type=float, default=1.0, help="weight of the feature-distillation loss (cosine) beside the soft distillation loss")
    p.add_argument("--unknown-method", choices=METHODS, default="msp", help="unknown-item scorer fitted on the training photos at the end (the shipped model's rule, Mahalanobis fitted with rendered views, is set afterwards by `unknown-fit --method mahalanobis --views 2`: docs/results.md)")


def optimiser_and_schedule(model: torch.nn.Module, lr: float, epochs: int, steps_per_epoch: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """The second training's optimiser: AdamW (weight decay 0.05 on weight matrices and kernels only),
    linear warm-up (5 epochs, at most a fifth of the run) then cosine decay, stepped once per batch.
    Parameters with requires_grad False (the frozen noise scales, a frozen stem) are left out."""
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=lr)
    total = epochs * steps_per_epoch
    return opt, warmup_cosine(opt, min(5 * steps_per_epoch, total // 5), total)


def _two_heads(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-head model (the MobileNet baseline) plays both heads, so the same loss applies."""
    return out if isinstance(out, tuple) else (out, out)


def run_epoch(
    model: torch.nn.Module,
    teacher: torch.nn.Module | None,
    loader: torch.utils.data.DataLoader,
    criterion: DistillationLoss,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    desc: str,
    show: bool = True,
    feature_weight: float = 0.0,
    use_stored_targets: bool = True,
) -> tuple[float, float]:
    """One epoch of the second training's recipe; returns (mean loss, training accuracy).

    With a teacher: the soft distillation loss, the teacher in eval mode under no_grad on the
    same augmented batch. Without one: cross-entropy on both heads (the no-distillation ablation);
    use_stored_targets False ignores a view cache's stored teacher logits in the same way.
    A model that also returns predicted ImageNet features (FromStemWithFeatures) adds
    feature_weight x the feature-distillation loss against the batch's fourth entry.
    """
    def step_loss(batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch[0].to(device, memory_format=torch.channels_last), batch[1].to(device)
        out = model(x)
        predicted_features = out[2] if isinstance(out, tuple) and len(out) == 3 else None
        cls_logits, dist_logits = _two_heads(out[:2] if predicted_features is not None else out)
        if len(batch) >= 3 and use_stored_targets:  # the teacher's logits for this very view, from the view cache
            loss = criterion(cls_logits, dist_logits, batch[2].to(device), y)
            if predicted_features is not None:  # and the ImageNet network's features of it
                loss = loss + feature_weight * feature_loss(predicted_features, batch[3].to(device))
        elif teacher is not None:
            with torch.no_grad():
                t_logits = teacher(x)
            loss = criterion(cls_logits, dist_logits, t_logits, y)
        else:
            loss = criterion(cls_logits, dist_logits, dist_logits.detach(), y)
            loss = loss + torch.nn.functional.cross_entropy(dist_logits, y, weight=criterion.class_weight)
        return loss, inference_logits((cls_logits, dist_logits)), y

    return train_epoch(model, loader, step_loss, opt, sched, desc, show)


def _student(args: argparse.Namespace, names: list[str], run_dir: Path) -> DistilledViT:
    init = args.init or (run_dir / "meta_student.pt")
    if init.is_file():
        d = torch.load(init, map_location="cpu", weights_only=True)
        if list(d.get("class_names", names)) != list(names):  # same classes, same order, or the heads mean other things
            raise ValueError(f"student init {init} has classes {list(d['class_names'])}, the data has {names} (same names in the same order needed)")
        model = DistilledViT(StudentConfig.from_dict(d["config"]))
        model.load_state_dict(d["state_dict"])
        log.info("student initialised from %s", init)
        return model
    if args.init is not None:
        raise FileNotFoundError(f"student init not found: {init}")
    cfg = StudentConfig.from_dict({**json.loads(args.config.read_text()), "num_classes": len(names)}) if args.config else StudentConfig(num_classes=len(names))
    log.warning("no meta-trained weights at %s: the student starts from random init", init)
    return DistilledViT(cfg)


def run(args: argparse.Namespace) -> dict[str, float]:
    if not 0.0 <= args.average_tail <= 1.0:
        raise ValueError(f"--average-tail must be a fraction in [0, 1], got {args.average_tail}")
    if not 0.0 <= args.aug_strength <= 1.0:
        raise ValueError(f"--aug-strength must be in [0, 1], got {args.aug_strength}")
    seed_everything(args.seed)
    ctx = init_distributed(args.device)
    device = ctx.device
    run_dir: Path = args.run_dir
    if ctx.is_main:
        get_split(args.data, run_dir, args.val_fraction, args.seed)  # rank 0 writes the split once
    ctx.barrier()
    names, train, val, _ = get_split(args.data, run_dir, args.val_fraction, args.seed)
    model = _student(args, names, run_dir).to(device)
    cfg = model.cfg
    pre = student_preprocess(cfg)
    teacher = None
    teacher_path = args.teacher or (run_dir / "teacher.pt")
    # `--teacher none` with a view cache: the same views, labels only (the no-distillation ablation row)
    distilling = str(teacher_path) != "none"
    if not distilling and args.imagenet_features is not None:
        raise ValueError("--teacher none trains without distillation; drop --imagenet-features (feature distillation) too")
    cache_teacher = Path(str(ViewCache.load(args.views).teacher)) if args.views is not None else None  # whose logits the cache stores
    train_ds: torch.utils.data.Dataset
    if args.stem_features is not None:
        if args.views is None:
            raise ValueError("--stem-features goes with --views (the teacher's logits for the same views)")
        stem_for_features(model, args.stem_features, cache_teacher)  # the stored outputs are of this very stem, frozen
        args.freeze_stem_stages = model.cfg.frozen_stem_stages  # the stages after them (cfg.stem_tuned_stages) train
        train_ds = stem_feature_dataset(args.views, args.stem_features, train, names)
        if args.imagenet_features is not None:
            stream = train_ds.views
            feature_targets = load_feature_targets(args.imagenet_features, len(train), stream.views)
            train_ds = EpochViews(WithFeatureTargets(stream, feature_targets))
    elif args.imagenet_features is not None:
        raise ValueError("--imagenet-features goes with --stem-features (the features are stored per cached view)")
    elif args.views is not None:
        train_ds = cached_view_dataset(args.views, train, names, pre, run_dir)
    else:
        if distilling:
            teacher, t_names = load_teacher(teacher_path, device, pre)
            if t_names != names:
                raise ValueError(f"teacher classes {t_names} differ from the data's {names}")
        train_ds = CachedImageDataset(train, pre, belt_augmentation(*cfg.image_size, strength=args.aug_strength))
    if args.stem_from_teacher is not None:
        copy_stem_from_teacher(model, args.stem_from_teacher)
        log.info("student stem initialised from %s", args.stem_from_teacher)
    val_dl = make_loader(CachedImageDataset(val, pre), 64, False)
    # the validation photos once each on a fixed other backdrop (the teacher's second figure too)
    # and as a belt camera delivers them (smaller, JPEG-compressed: training.camera_degrade)
    val_pasted_dl = val_camera_dl = None
    if args.views is not None:
        photos_val = load_photos(val, TEACHER_INPUTS[DEFAULT_TEACHER].size, mask_store_for(run_dir))
        val_pasted_dl, val_camera_dl = evaluation_loaders(photos_val, pre)[1], camera_loader(photos_val, pre)
    train_dl = ctx.train_loader(train_ds, args.batch_size, args.balance, args.workers)
    for p in model.affine_parameters():
        p.requires_grad_(False)
    freeze_stem(model, args.freeze_stem_stages)
    model = model.to(memory_format=torch.channels_last)
    feature_head = None
    if args.imagenet_features is not None:
        feature_head = FeatureHead(cfg.d_model, int(feature_targets.shape[2])).to(device)
    trained = model if feature_head is None else torch.nn.ModuleDict({"student": model, "feature_head": feature_head})
    opt, sched = optimiser_and_schedule(trained, args.lr, args.epochs, len(train_dl))
    student = model
    if feature_head is not None:
        model = ctx.wrap(FromStemWithFeatures(student, feature_head))
    else:
        model = ctx.wrap(FromStem(student) if args.stem_features is not None else student)
    weights = class_weights(train_ds.labels, len(names)).to(device) if args.balance == "weights" else None
    if distilling and cache_teacher is not None:
        teacher_path = cache_teacher
    criterion = DistillationLoss(args.tau, args.lam if distilling else 0.0, hard=args.hard, class_weight=weights)
    state, state_path, logger = TrainState(), run_dir / "distill_state.pt", JsonlLog(run_dir / "distill_log.jsonl")
    window = [args.epochs - max(1, math.ceil(args.average_tail * args.epochs)), args.epochs]  # epochs (start, end] averaged
    average = AveragedModel(student) if args.average_tail > 0 else None
    if args.resume and state_path.is_file():
        state, extra = load_state(state_path, student, opt, sched)
        if feature_head is not None:
            if "feature_head" not in extra:
                raise ValueError(f"{state_path} was saved without a feature head; resume without --imagenet-features or start afresh")
            feature_head.load_state_dict(extra["feature_head"])
        if average is not None and extra.get("average_window") == window:
            average.load_state_dict(extra["average"])
        log.info("resumed distillation at epoch %d", state.epoch)
    best_path = run_dir / "student_best_state.pt"
    timer = Timer()
    while state.epoch < args.epochs:
        ctx.set_epoch(train_dl, state.epoch)
        if isinstance(train_ds, EpochViews):
            train_ds.set_epoch(state.epoch)
        loss_avg, acc = run_epoch(model, teacher, train_dl, criterion, opt, sched, device, f"distill {state.epoch + 1}/{args.epochs}", show=ctx.is_main, feature_weight=args.feature_weight, use_stored_targets=distilling)
        state.step += len(train_dl)
        student.eval()
        logits, ys = predict_logits(student, val_dl, device)
        val_acc = float((logits.argmax(1) == ys).float().mean())
        state.epoch += 1
        if average is not None and state.epoch > window[0]:
            average.update_parameters(student)
        val_pasted = accuracy(student, val_pasted_dl, device) if val_pasted_dl is not None else None
        val_camera = accuracy(student, val_camera_dl, device) if val_camera_dl is not None else None
        rec = {"stage": "distill", "epoch": state.epoch, "train_loss": loss_avg, "train_acc": acc, "val_acc": val_acc, "val_pasted_acc": val_pasted, "val_camera_acc": val_camera, "lr": sched.get_last_lr()[0], "elapsed_s": timer.elapsed(), "world_size": ctx.world_size}
        if val_acc >= state.best_metric:
            state.best_metric = val_acc
            if ctx.is_main:
                torch.save(student.state_dict(), best_path)
        if ctx.is_main:
            logger.write(rec)
            log.info("%s", rec)
            extra_state = {"average": average.state_dict(), "average_window": window} if average is not None else {}
            if feature_head is not None:
                extra_state["feature_head"] = feature_head.state_dict()
            save_state(state_path, student, opt, sched, state, extra_state or None)
        ctx.barrier()
    ctx.close()
    if not ctx.is_main:
        return {"rank": ctx.rank}
    model = student
    n_averaged = int(average.n_averaged) if average is not None else 0
    if n_averaged > 0:
        model.load_state_dict(average.module.state_dict())
        final_weights = f"mean of epochs {state.epoch - n_averaged + 1}-{state.epoch}"
    else:
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
        final_weights = f"best epoch by validation accuracy ({state.best_metric:.4f})"
    log.info("final weights: %s", final_weights)
    model.eval()
    logits, ys = predict_logits(model, val_dl, device)
    temperature = fit_temperature(logits.numpy(), ys.numpy())
    unknown = fit_for_model(model, make_loader(CachedImageDataset(train, pre), 64, False), val_dl, device, temperature, args.unknown_method)
    before = compute_metrics(logits.numpy(), ys.numpy(), names)
    after = compute_metrics(logits.numpy(), ys.numpy(), names, temperature)
    out = args.out or (run_dir / "student.pt")
    save_checkpoint(
        out,
        model.cpu(),
        names,
        pre,
        temperature=temperature,
        unknown=unknown,
        meta={
            "data": str(args.data),
            "split": str(run_dir / "split.json"),
            "val_accuracy": before.accuracy,
            "val_images": int(len(ys)),  # how far val_accuracy can be trusted: a final fit holds out only the demo's 24
            "val_macro_f1": before.macro_f1,
            "val_ece_before_temperature": before.ece,
            "val_ece_after_temperature": after.ece,
            "distill": {"tau": args.tau, "lam": args.lam, "hard": args.hard, "epochs": args.epochs, "lr": args.lr, "aug_strength": args.aug_strength, "teacher": str(teacher_path), "views": str(args.views) if args.views else None, "stem_from_teacher": str(args.stem_from_teacher) if args.stem_from_teacher else None, "stem_features": str(args.stem_features) if args.stem_features else None, "freeze_stem_stages": args.freeze_stem_stages, "imagenet_features": str(args.imagenet_features) if args.imagenet_features else None, "feature_weight": args.feature_weight if args.imagenet_features else None, "weights": final_weights},
        },
    )
    return {"val_accuracy": before.accuracy, "val_macro_f1": before.macro_f1, "best_epoch_val_accuracy": state.best_metric, "weights": final_weights, "temperature": temperature, "ece_before": before.ece, "ece_after": after.ece, "checkpoint": str(out)}
