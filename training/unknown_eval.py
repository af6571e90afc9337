"""`wastesort-train unknown-eval`: leave-one-class-out evaluation of the unknown-item scorers.

For each held-out class: train a student (small budget, cross-entropy on both heads, no teacher)
on the other classes of the saved split, then score the known-class validation images and every
image of the held-out class. Reported per scorer: the share of held-out items rejected at the
threshold that keeps 95% of known items, and the AUROC. No outside data is needed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.config import StudentConfig
from model.preprocess import PreprocessConfig
from model.student import DistilledViT, inference_logits
from model.unknown import METHODS, raw_scores, softmax

from .augment import belt_augmentation
from .data import CachedImageDataset, Sample, get_split
from .loop import class_weights, make_loader, param_groups, resolve_device, seed_everything, train_epoch, warmup_cosine
from .metrics import fit_temperature
from .student_init import student_preprocess
from .unknown_loco import train_known
from .unknown_fit import auroc, feature_params, logits_and_features, rejected_at_keep

log = logging.getLogger(__name__)
CONFIDENCE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--holdout", default="glass,metal,trash", help="comma-separated classes to hold out, one run each")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=None, help="JSON result (default run_dir/unknown_eval.json), rewritten after every held-out class")
    p.add_argument("--features-out", type=Path, default=None, help="folder for each held-out class's features and logits (npz), to measure new scorers without retraining")
    p.add_argument("--views", type=Path, default=None, help="the shipped recipe instead of small from-scratch students: the view cache (teacher-cache) whose teacher logits each held-out run distils from, the held-out class's logit removed")
    p.add_argument("--stem-features", type=Path, default=None, help="with --views: the stored stem outputs of those views (teacher-cache --student-config)")
    p.add_argument("--imagenet-features", type=Path, default=None, help="with --views: the stored ImageNet features of those views; adds feature distillation, as distill --imagenet-features")
    p.add_argument("--feature-weight", type=float, default=1.0)
    p.add_argument("--tau", type=float, default=3.0)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--rescore", type=Path, default=None, help="no training: recompute the table from a --features-out folder")


def _relabel(samples: list[Sample], keep: list[int]) -> list[Sample]:
    index = {c: i for i, c in enumerate(keep)}
    return [Sample(s.path, index[s.label]) for s in samples if s.label in index]


def train_small(train: list[Sample], k: int, pre: PreprocessConfig, args: argparse.Namespace, device: torch.device) -> DistilledViT:
    model = DistilledViT(StudentConfig(num_classes=k, image_size=(pre.height, pre.width))).to(device)
    ds = CachedImageDataset(train, pre, belt_augmentation(pre.height, pre.width))
    dl = make_loader(ds, args.batch_size, True, num_workers=args.workers)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=args.lr)
    sched = warmup_cosine(opt, len(dl), args.epochs * len(dl))
    w = class_weights(ds.labels, k).to(device)

    def step_loss(batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch[0].to(device), batch[1].to(device)
        a, b = model(x)
        return (F.cross_entropy(a, y, weight=w) + F.cross_entropy(b, y, weight=w)) / 2, inference_logits((a, b)), y

    for epoch in range(args.epochs):
        loss, acc = train_epoch(model, dl, step_loss, opt, sched, f"holdout-train {epoch + 1}/{args.epochs}")
        log.info("holdout-train epoch %d: loss %.3f, training accuracy %.3f", epoch + 1, loss, acc)  # a run that fails to learn shows here
    return model.eval()


def holdout_arrays(model: DistilledViT, train: list[Sample], val_known: list[Sample], unknown: list[Sample], pre: PreprocessConfig, device: torch.device) -> dict[str, np.ndarray]:
    """Logits and features of the known training images, the known validation images and the held-out class."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, samples in (("train", train), ("known", val_known), ("unknown", unknown)):
        logits, features, labels = logits_and_features(model, make_loader(CachedImageDataset(samples, pre), 64, False), device)
        arrays.update({f"{prefix}_logits": logits, f"{prefix}_features": features, f"{prefix}_labels": labels})
    return arrays


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """float16 logits and features (half the size; the scorers are far coarser than that)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in arrays.items()})


def score_holdout(arrays: dict[str, np.ndarray], k: int) -> dict[str, Any]:
    """Every scorer's share of held-out items rejected at 95% of known kept, and its AUROC (the
    logit scorers at the fitted temperature)."""
    a = {key: v.astype(np.float32) if v.dtype.kind == "f" else v for key, v in arrays.items()}
    # the logit scorers at the temperature that would ship: fitted on the known validation logits, as distill does
    t = fit_temperature(a["known_logits"], a["known_labels"])
    out: dict[str, Any] = {"known_accuracy": float((a["known_logits"].argmax(1) == a["known_labels"]).mean()), "n_known": len(a["known_labels"]), "n_unknown": len(a["unknown_logits"]), "temperature": t}
    for m in METHODS:
        params = feature_params(m, a["train_features"], a["train_labels"], k)
        known_s = raw_scores(m, a["known_logits"], a["known_features"], params, t)
        unknown_s = raw_scores(m, a["unknown_logits"], a["unknown_features"], params, t)
        out[m] = {"rejected_at_95_kept": rejected_at_keep(known_s, unknown_s), "auroc": auroc(known_s, unknown_s)}
    out["confidence_rule"] = confidence_rule(a["known_logits"], a["known_labels"], a["unknown_logits"])
    return out


def confidence_rule(known_logits: np.ndarray, known_labels: np.ndarray, unknown_logits: np.ndarray) -> list[dict[str, float | None]]:
    """The daemon's confidence threshold as an unknown-item filter: per threshold, the share of known
    items sorted (and their accuracy) against the share of held-out items rejected. The temperature
    is fitted on the known validation logits, as `distill` does for the shipped model."""
    t = fit_temperature(known_logits, known_labels)
    known_p, unknown_p = softmax(known_logits, t), softmax(unknown_logits, t)
    correct = known_p.argmax(axis=1) == known_labels
    rows = []
    for threshold in CONFIDENCE_THRESHOLDS:
        kept = known_p.max(axis=1) >= threshold
        rows.append({
            "confidence_threshold": threshold,
            "known_sorted": float(kept.mean()),
            "known_sorted_accuracy": float(correct[kept].mean()) if kept.any() else None,
            "unknown_rejected": float((unknown_p.max(axis=1) < threshold).mean()),
        })  # fmt: skip
    return rows


def _with_means(results: dict[str, Any]) -> dict[str, Any]:
    for m in METHODS:
        rows = [r[m] for r in results["holdout"].values()]
        results[f"mean_{m}"] = {k: float(np.mean([x[k] for x in rows])) for k in ("rejected_at_95_kept", "auroc")}
    rules = [r["confidence_rule"] for r in results["holdout"].values() if "confidence_rule" in r]
    if rules:
        results["mean_confidence_rule"] = [
            {"confidence_threshold": row["confidence_threshold"], **{k: float(np.mean([r[i][k] for r in rules])) for k in ("known_sorted", "unknown_rejected")}}
            for i, row in enumerate(rules[0])
        ]
    return results


def rescore(folder: Path, out: Path) -> dict[str, Any]:
    """The table again from saved features (holdout_<class>.npz), with the current scorers: no training."""
    files = sorted(folder.glob("holdout_*.npz"))
    if not files:
        raise FileNotFoundError(f"no holdout_<class>.npz files in {folder} (write them with --features-out)")
    results: dict[str, Any] = {"rescored_from": str(folder), "holdout": {}}
    for f in files:
        with np.load(f) as z:
            arrays = dict(z)
        results["holdout"][f.stem.removeprefix("holdout_")] = score_holdout(arrays, int(arrays["train_labels"].max()) + 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_with_means(results), indent=1))
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.rescore is not None:
        return rescore(args.rescore, args.out or (args.rescore / "unknown_eval_rescored.json"))
    seed_everything(args.seed)
    device = resolve_device(args.device)
    names, train, val, _ = get_split(args.data, args.run_dir, args.val_fraction, args.seed)
    if args.views is not None and args.stem_features is None:
        raise ValueError("unknown-eval --views needs --stem-features (the shipped recipe trains from stored stem outputs)")
    if args.views is None and args.imagenet_features is not None:
        raise ValueError("--imagenet-features goes with --views and --stem-features")
    pre = PreprocessConfig(*StudentConfig().image_size)
    held_out = args.holdout.split(",")
    unknown_names = [h for h in held_out if h not in names]
    if unknown_names:
        raise ValueError(f"--holdout classes {unknown_names} are not among {names}")
    recipe = "distilled from cached views" + (" + ImageNet features" if args.imagenet_features else "") if args.views else "cross-entropy from scratch"
    results: dict[str, Any] = {"epochs": args.epochs, "recipe": recipe, "holdout": {}}
    out = args.out or (args.run_dir / "unknown_eval.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for held in held_out:
        c = names.index(held)
        keep = [i for i in range(len(names)) if i != c]
        unknown = [s for s in train + val if s.label == c]
        if args.views is not None:
            model = train_known(args, train, names, c, device)
            pre = student_preprocess(model.cfg)
        else:
            model = train_small(_relabel(train, keep), len(keep), pre, args, device)
        arrays = holdout_arrays(model, _relabel(train, keep), _relabel(val, keep), unknown, pre, device)
        if args.features_out is not None:
            save_arrays(args.features_out / f"holdout_{held}.npz", arrays)
        r = score_holdout(arrays, len(keep))
        results["holdout"][held] = r
        log.info("held out %s: %s", held, r)
        out.write_text(json.dumps(_with_means(results), indent=1))  # after every class: a run stopped part-way keeps what it measured
    return results
