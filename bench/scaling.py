"""How the student's latency and memory grow with input resolution: global+window attention
(masked, and neighbourhood-gathered) against plain global attention."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from .timing import stats, time_call


def _one(height: int, width: int, radius: int | None, impl: str, warmup: int, runs: int, threads: int) -> dict[str, Any]:
    import torch

    from model.config import StudentConfig
    from model.student import DistilledViT

    torch.set_num_threads(threads)
    cfg = StudentConfig(image_size=(height, width), window_radius=radius, attention_impl=impl)
    net = DistilledViT(cfg).eval()
    x = torch.randn(1, 3, height, width)

    def run() -> None:
        with torch.inference_mode():
            net(x)

    name = "global" if radius is None else f"window-r{radius}/{impl}"
    return stats(name, time_call(run, warmup, runs), tokens=cfg.num_patches + 2, height=height, width=width).to_dict()


def run_scaling(sizes: list[tuple[int, int]], radius: int, warmup: int, runs: int, threads: int) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    out = []
    for h, w in sizes:
        for r, impl in ((None, "masked"), (radius, "masked"), (radius, "gather")):
            with ctx.Pool(1) as pool:
                out.append(pool.apply(_one, (h, w, r, impl, warmup, runs, threads)))
    return out
