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
from torch.utils.data import ConcatDataset

from model.checkpoint import load_checkpoint, save_checkpoint
from model.descriptor import FEATURE_SOURCES, FEATURES_CLASS_TOKEN, FEATURES_IMAGENET
from model.preprocess import PreprocessConfig
from model.teacher import DEFAULT_TEACHER, TEACHER_INPUTS
from model.unknown import METHODS

from .camera_degrade import CameraDegradation
from .cutout import MaskStore

from .data import CachedImageDataset, Sample, load_split
from .loop import make_loader
from .metrics import TEMPERATURE_RANGE
from .teacher_train import VAL_PASTED_SEED
from .unknown_fit import fit_for_model
from .view_data import SeededViews, load_photos, view_seeds

VIEW_SEED = 4242  # the training views the scorer is fitted on (not the distillation's seeds)


def _views(samples: list[Sample], n: int, seed: int, pre: PreprocessConfig, masks: Path, camera: float) -> SeededViews:
    """n rendered views of each photo (cut out onto other surfaces or on its board, as in training),
    a share `camera` of them degraded as a belt camera would."""
    photos = load_photos(samples, TEACHER_INPUTS[DEFAULT_TEACHER].size, MaskStore(masks))
    return SeededViews(photos, view_seeds(len(samples), n, seed), pre, camera=CameraDegradation(p=camera) if camera > 0 else None)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a student checkpoint")
    p.add_argument("--split", type=Path, required=True, help="the split it was trained on: training images give the features, validation images the threshold")
    p.add_argument("--data", type=Path, default=None, help="ImageFolder root (default: the split's own root)")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--features", choices=FEATURE_SOURCES, default=FEATURES_CLASS_TOKEN, help="what the distance scorers measure: the class token, or the ImageNet descriptor computed from the student's stem (model/descriptor.py; needs a student whose stem is ImageNet's own: teacher-cache --stem-source imagenet)")
    p.add_argument("--descriptor-blocks", type=int, default=None, help="with --features imagenet: how many of the ImageNet network's blocks after the stem describe the item (default: all; fewer are faster and separate less, docs/results.md)")
    p.add_argument("--out", type=Path, default=None, help="where to write the result (default: replace --checkpoint)")
    p.add_argument("--views", type=int, default=0, help="also fit on N rendered views of every training photo and set the threshold on the validation photos plus one view each on another backdrop: the line shows items on a belt, not on TrashNet's board")
    p.add_argument("--camera", type=float, default=0.0, help="with --views: this share of the views degraded as a belt camera would (downscaled, JPEG: training.camera_degrade), so the threshold keeps known items seen through a camera too")
    p.add_argument("--masks", type=Path, default=Path("runs/masks"), help="with --views: the cut-out masks (computed there on first use)")
    p.add_argument("--temperature", type=float, default=None,
                   help="replace the checkpoint's softmax temperature: a final fit on every photo has no held-out photos to fit its own, "
                        "so it takes the temperature its recipe fitted on held-out photos (scripts/train-default.sh FINAL_FIT=1)")


def run(args: argparse.Namespace) -> dict:
    ckpt = load_checkpoint(args.checkpoint)
    root = args.data or Path(json.loads(args.split.read_text())["root"])
    names, train, val = load_split(args.split, root)
    if names != ckpt.class_names:
        raise ValueError(f"split classes {names} differ from the checkpoint's {ckpt.class_names}")
    if args.descriptor_blocks is not None and args.features != FEATURES_IMAGENET:
        raise ValueError("--descriptor-blocks goes with --features imagenet")
    if args.views < 0:
        raise ValueError(f"--views must be >= 0, got {args.views}")
    low, high = TEMPERATURE_RANGE
    if args.temperature is not None and not low <= args.temperature <= high:
        raise ValueError(f"--temperature must be in [{low}, {high}], got {args.temperature}")
    temperature = ckpt.temperature if args.temperature is None else args.temperature
    model = ckpt.build_model()
    datasets = [CachedImageDataset(samples, ckpt.preprocess) for samples in (train, val)]
    if args.views:
        datasets = [ConcatDataset([datasets[0], _views(train, args.views, VIEW_SEED, ckpt.preprocess, args.masks, args.camera)]),
                    ConcatDataset([datasets[1], _views(val, 1, VAL_PASTED_SEED, ckpt.preprocess, args.masks, args.camera)])]
    loaders = [make_loader(d, 64, False) for d in datasets]
    unknown = fit_for_model(model, *loaders, torch.device("cpu"), temperature, args.method, args.features, args.descriptor_blocks)
    meta = {**ckpt.meta, "unknown_refit": {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "method": args.method, "features": args.features, "descriptor_blocks": unknown.get("descriptor_blocks"), "split": str(args.split), "views": args.views, "camera": args.camera,
                                           "temperature": temperature, "temperature_fitted": ckpt.temperature}}
    out = save_checkpoint(args.out or args.checkpoint, model, ckpt.class_names, ckpt.preprocess, temperature, unknown, meta)
    return {"checkpoint": str(out), "method": args.method, "features": args.features, "descriptor_blocks": unknown.get("descriptor_blocks"), "centre": unknown["centre"], "slope": unknown["slope"], "temperature": temperature, "bytes": out.stat().st_size}
