"""Student latency as a function of the depthwise-convolution stack depth (the patent says 32)."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from .timing import stats, time_call


def _one(depth: int, warmup: int, runs: int, threads: int) -> dict[str, Any]:
    import torch

    from model.config import StudentConfig
    from model.student import DistilledViT

    torch.set_num_threads(threads)
    cfg = StudentConfig(conv_depth=depth)
    net = DistilledViT(cfg).eval()
    x = torch.randn(1, 3, *cfg.image_size)

    def run() -> None:
        with torch.inference_mode():
            net(x)

    params = sum(p.numel() for p in net.parameters())
    return stats(f"conv_depth={depth}", time_call(run, warmup, runs), conv_depth=depth, params=params).to_dict()


def run_conv_depth(depths: list[int], warmup: int, runs: int, threads: int) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    out = []
    for d in depths:
        with ctx.Pool(1) as pool:
            out.append(pool.apply(_one, (d, warmup, runs, threads)))
    return out
