"""Per-item latency of several student checkpoints in one process, rounds interleaved so that the
machine's drift hits every model alike: the daemon's inference path (preprocessing included), batch 1.

    .venv/bin/python scripts/latency_students.py CHECKPOINT [CHECKPOINT ...] [--backend onnx-int8] [--rounds 3] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.latency import sample_images, time_call_per_item
from model import load_classifier


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--backend", default="onnx-int8", choices=("torch", "onnx", "onnx-int8"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = {str(c): load_classifier(c, args.backend, threads=args.threads) for c in args.checkpoints}  # type: ignore[arg-type]
    images = sample_images(1)
    medians: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, clf in models.items():
            ms = time_call_per_item(lambda: clf.predict(images), 20, args.runs, 1)
            medians[name].append(round(float(np.median(ms)), 2))
    print(json.dumps({"backend": args.backend, "runs": args.runs, "median_ms_per_round": medians}))


if __name__ == "__main__":
    main()
