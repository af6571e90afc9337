"""`wastesort-train export`: the daemon's single-file checkpoint and a self-contained ONNX file."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from model.checkpoint import load_checkpoint
from model.inference import export_onnx_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a student checkpoint (e.g. runs/x/student.pt)")
    p.add_argument("--onnx", type=Path, default=None, help="ONNX output (default: next to the checkpoint)")
    p.add_argument("--install", type=Path, default=None, help="also copy the checkpoint here (e.g. model/weights/default.pt)")


def run(args: argparse.Namespace) -> dict:
    load_checkpoint(args.checkpoint)  # validates before anything is written
    onnx_path = export_onnx_file(args.checkpoint, args.onnx or args.checkpoint.with_suffix(".onnx"))
    result = {"onnx": str(onnx_path), "onnx_bytes": onnx_path.stat().st_size}
    if args.install:
        args.install.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.install.with_suffix(".tmp")
        shutil.copyfile(args.checkpoint, tmp)
        tmp.replace(args.install)
        result["installed"] = str(args.install)
    return result
