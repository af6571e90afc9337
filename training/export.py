"""`wastesort-train export`: the daemon's single-file checkpoint and a self-contained ONNX file."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.inference import export_onnx_file

from .install import install_model, load_valid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a student checkpoint (e.g. runs/x/student.pt)")
    p.add_argument("--onnx", type=Path, default=None, help="ONNX output (default: next to the checkpoint)")
    p.add_argument("--install", type=Path, default=None, help="also install the checkpoint here (e.g. the daemon's classify.model_path): backup + checksum, refused if worse than the installed model on the base validation split")
    p.add_argument("--base", type=Path, default=None, help="base dataset for the install check (default: the one the checkpoint was fine-tuned with)")
    p.add_argument("--margin", type=float, default=0.02, help="refuse a model this much less accurate on the base validation split (default 0.02)")
    p.add_argument("--force", action="store_true", help="install without the accuracy check")


def run(args: argparse.Namespace) -> dict:
    load_valid(args.checkpoint)  # validates before anything is written
    onnx_path = export_onnx_file(args.checkpoint, args.onnx or args.checkpoint.with_suffix(".onnx"))
    result = {"onnx": str(onnx_path), "onnx_bytes": onnx_path.stat().st_size}
    if args.install:
        result |= install_model(args.checkpoint, args.install, args.base, args.margin, args.force).as_dict()
    return result
