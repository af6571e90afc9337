"""`wastesort-train`: teacher | teacher-cache | meta | distill | unknown-eval | ablation | evaluate | export | unknown-fit | review | finetune."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "trashnet"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder root (default: %(default)s)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/default"), help="where split, logs and checkpoints go")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--balance", choices=["none", "weights", "sampler"], default="weights", help="class-imbalance handling")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last epoch checkpoint")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes (GPU runs want several)")


def main(argv: list[str] | None = None) -> int:
    from . import ablation, distill, evaluate, export, finetune, meta, review, teacher_train, unknown_eval, unknown_refit, view_cache

    parser = argparse.ArgumentParser(prog="wastesort-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    runners: dict[str, Callable[[argparse.Namespace], dict]] = {}
    for name, module, helptext in [
        ("teacher", teacher_train, "fine-tune the CNN teacher (default EfficientNet-Lite0, ImageNet-pretrained)"),
        ("teacher-cache", view_cache, "the teacher's logits for K fixed views of every training photo"),
        ("meta", meta, "first training: meta-learn the feature-wise transform"),
        ("distill", distill, "second training: distil the student from the teacher"),
        ("unknown-eval", unknown_eval, "leave-one-class-out evaluation of the unknown-item scorers"),
        ("ablation", ablation, "the ablation table: every variant on the same split and budget"),
    ]:
        p = sub.add_parser(name, help=helptext)
        _common(p)
        module.add_arguments(p)
        runners[name] = module.run
    for name, module, helptext in [
        ("evaluate", evaluate, "accuracy, macro-F1, per-class P/R, ECE, confusion matrix"),
        ("export", export, "ONNX + the single-file checkpoint the daemon loads"),
        ("unknown-fit", unknown_refit, "give a trained checkpoint another unknown-item scorer (no retraining)"),
        ("review", review, "turn the daemon's collected crops into labels a person checked (docs/site-data.md)"),
        ("finetune", finetune, "fine-tune a student on site data mixed with the base dataset"),
    ]:
        p = sub.add_parser(name, help=helptext)
        module.add_arguments(p)
        runners[name] = module.run
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    from .data import DataError

    try:
        result = runners[args.command](args)
    except DataError as exc:
        print(f"wastesort-train: data error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"wastesort-train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
