"""`wastesort-train unknown-fit`: give a trained checkpoint another unknown-item scorer, no retraining.

The scorer is chosen by the leave-one-class-out table (docs/results.md); when that table changes
its choice, the shipped model should follow without another training run. Features come from the
split's training images (unaugmented), the threshold from its validation images, exactly as at
the end of `distill`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.unknown import METHODS

from .data import CachedImageDataset, load_split
from .loop import make_loader
from .unknown_fit import fit_for_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a student checkpoint")
    p.add_argument("--split", type=Path, required=True, help="the split it was trained on: training images give the features, validation images the threshold")
    p.add_argument("--data", type=Path, default=None, help="ImageFolder root (default: the split's own root)")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--out", type=Path, default=None, help="where to write the result (default: replace --checkpoint)")


def run(args: argparse.Namespace) -> dict:
    ckpt = load_checkpoint(args.checkpoint)
    root = args.data or Path(json.loads(args.split.read_text())["root"])
    names, train, val = load_split(args.split, root)
    if names != ckpt.class_names:
        raise ValueError(f"split classes {names} differ from the checkpoint's {ckpt.class_names}")
    model = ckpt.build_model()
    loaders = [make_loader(CachedImageDataset(samples, ckpt.preprocess), 64, False) for samples in (train, val)]
    unknown = fit_for_model(model, *loaders, torch.device("cpu"), ckpt.temperature, args.method)
    meta = {**ckpt.meta, "unknown_refit": {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "method": args.method, "split": str(args.split)}}
    out = save_checkpoint(args.out or args.checkpoint, model, ckpt.class_names, ckpt.preprocess, ckpt.temperature, unknown, meta)
    return {"checkpoint": str(out), "method": args.method, "centre": unknown["centre"], "slope": unknown["slope"], "bytes": out.stat().st_size}
