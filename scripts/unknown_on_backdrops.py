"""How often the reject rule of a checkpoint rejects KNOWN items, on the validation photos as
they are and on the same photos rendered on other backdrops (what the belt shows).

A distance scorer fitted on TrashNet's white board alone may call a known item on a belt
"unknown"; this measures it. Usage:
    .venv/bin/python scripts/unknown_on_backdrops.py CHECKPOINT [CHECKPOINT ...] [--split training/splits/trashnet_seed0.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.teacher import DEFAULT_TEACHER, TEACHER_INPUTS
from model.unknown import prepare_params, unknown_scores
from training.cutout import MaskStore
from training.data import CachedImageDataset, load_split
from training.loop import make_loader
from training.unknown_fit import logits_and_features
from training.view_data import SeededViews, load_photos, view_seeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--split", type=Path, default=Path("training/splits/trashnet_seed0.json"))
    p.add_argument("--masks", type=Path, default=Path("runs/masks"))
    p.add_argument("--seed", type=int, default=555, help="backdrop views (not the seeds any fit used)")
    args = p.parse_args()
    root = Path(json.loads(args.split.read_text())["root"])
    _, _, val = load_split(args.split, root)
    photos = load_photos(val, TEACHER_INPUTS[DEFAULT_TEACHER].size, MaskStore(args.masks))
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        model = ckpt.build_model().eval()
        params = prepare_params(ckpt.unknown)
        row = {"checkpoint": str(path), "method": (ckpt.unknown or {}).get("method", "msp")}
        for name, ds in (("plain", CachedImageDataset(val, ckpt.preprocess)), ("other_backdrops", SeededViews(photos, view_seeds(len(val), 2, args.seed), ckpt.preprocess))):
            logits, feats, labels = logits_and_features(model, make_loader(ds, 64, False), torch.device("cpu"))
            u = unknown_scores(logits, feats, params, ckpt.temperature)
            row[f"{name}_accuracy"] = round(float((logits.argmax(1) == labels).mean()), 3)
            row[f"{name}_known_rejected"] = round(float((u > 0.5).mean()), 3)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
