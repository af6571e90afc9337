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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.config import StudentConfig
from model.preprocess import PreprocessConfig
from model.student import DistilledViT
from model.unknown import raw_scores

from .augment import belt_augmentation
from .data import CachedImageDataset, Sample, get_split
from .loop import class_weights, make_loader, progress, resolve_device, seed_everything, warmup_cosine
from .unknown_fit import auroc, class_prototypes, logits_and_features, rejected_at_keep

log = logging.getLogger(__name__)
METHODS = ("msp", "energy", "prototype")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--holdout", default="glass,metal,trash", help="comma-separated classes to hold out, one run each")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=None, help="JSON result (default run_dir/unknown_eval.json), rewritten after every held-out class")
    p.add_argument("--features-out", type=Path, default=None, help="folder for each held-out class's features and logits (npz), to measure new scorers without retraining")


def _relabel(samples: list[Sample], keep: list[int]) -> list[Sample]:
    index = {c: i for i, c in enumerate(keep)}
    return [Sample(s.path, index[s.label]) for s in samples if s.label in index]


def train_small(train: list[Sample], k: int, pre: PreprocessConfig, args: argparse.Namespace, device: torch.device) -> DistilledViT:
    model = DistilledViT(StudentConfig(num_classes=k, image_size=(pre.height, pre.width))).to(device)
    ds = CachedImageDataset(train, pre, belt_augmentation(pre.height, pre.width))
    dl = make_loader(ds, args.batch_size, True, num_workers=args.workers)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = warmup_cosine(opt, len(dl), args.epochs * len(dl))
    w = class_weights(ds.labels, k).to(device)
    for epoch in range(args.epochs):
        model.train()
        for x, y in progress(dl, f"holdout-train {epoch + 1}/{args.epochs}"):
            x, y = x.to(device), y.to(device)
            a, b = model(x)
            loss = (F.cross_entropy(a, y, weight=w) + F.cross_entropy(b, y, weight=w)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def evaluate_holdout(
    model: DistilledViT, train: list[Sample], val_known: list[Sample], unknown: list[Sample], pre: PreprocessConfig, k: int, device: torch.device, features_file: Path | None = None
) -> dict[str, Any]:
    tr_l, tr_f, tr_y = logits_and_features(model, make_loader(CachedImageDataset(train, pre), 64, False), device)
    kl, kf, ky = logits_and_features(model, make_loader(CachedImageDataset(val_known, pre), 64, False), device)
    ul, uf, _ = logits_and_features(model, make_loader(CachedImageDataset(unknown, pre), 64, False), device)
    if features_file is not None:
        features_file.parent.mkdir(parents=True, exist_ok=True)
        half = lambda a: a.astype(np.float16)  # noqa: E731  (half the size; scorers are far coarser)
        np.savez_compressed(
            features_file,
            train_logits=half(tr_l), train_features=half(tr_f), train_labels=tr_y,
            known_logits=half(kl), known_features=half(kf), known_labels=ky,
            unknown_logits=half(ul), unknown_features=half(uf),
        )
    params = {"prototypes": class_prototypes(tr_f, tr_y, k)}
    out: dict[str, Any] = {"known_accuracy": float((kl.argmax(1) == ky).mean()), "n_known": len(ky), "n_unknown": len(ul)}
    for m in METHODS:
        known_s = raw_scores(m, kl, kf, params, 1.0)
        unknown_s = raw_scores(m, ul, uf, params, 1.0)
        out[m] = {"rejected_at_95_kept": rejected_at_keep(known_s, unknown_s), "auroc": auroc(known_s, unknown_s)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    device = resolve_device(args.device)
    names, train, val, _ = get_split(args.data, args.run_dir, args.val_fraction, args.seed)
    pre = PreprocessConfig(*StudentConfig().image_size)
    held_out = args.holdout.split(",")
    unknown_names = [h for h in held_out if h not in names]
    if unknown_names:
        raise ValueError(f"--holdout classes {unknown_names} are not among {names}")
    results: dict[str, Any] = {"epochs": args.epochs, "holdout": {}}
    out = args.out or (args.run_dir / "unknown_eval.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for held in held_out:
        c = names.index(held)
        keep = [i for i in range(len(names)) if i != c]
        unknown = [s for s in train + val if s.label == c]
        model = train_small(_relabel(train, keep), len(keep), pre, args, device)
        features_file = args.features_out / f"holdout_{held}.npz" if args.features_out else None
        r = evaluate_holdout(model, _relabel(train, keep), _relabel(val, keep), unknown, pre, len(keep), device, features_file)
        results["holdout"][held] = r
        log.info("held out %s: %s", held, r)
        for m in METHODS:  # the means so far, written each time: a run stopped part-way keeps what it measured
            rows = [r[m] for r in results["holdout"].values()]
            results[f"mean_{m}"] = {k: float(np.mean([x[k] for x in rows])) for k in ("rejected_at_95_kept", "auroc")}
        out.write_text(json.dumps(results, indent=1))
    return results
