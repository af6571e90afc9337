"""Where the student's time goes: torch.profiler over the daemon's inference path (preprocessing
included), batch 1, torch eager. The issue asks to profile before optimising; this is that profile,
kept so a change to the model can be checked against it."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


def _profile(model_path: str | None, runs: int, threads: int, top: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from model.inference import load_classifier

    from .latency import sample_images

    torch.set_num_threads(threads)
    clf = load_classifier(model_path, backend="torch")
    imgs = sample_images(1)
    for _ in range(5):
        clf.predict(imgs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            clf.predict(imgs)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = [
        {"op": e.key, "calls_per_item": e.count / runs, "self_ms_per_item": e.self_cpu_time_total / 1e3 / runs, "share": e.self_cpu_time_total / total}
        for e in events[:top]
    ]
    return {"runs": runs, "total_ms_per_item": total / 1e3 / runs, "top": rows}


def run_profile(model_path: str | None, runs: int, threads: int, top: int = 12) -> dict[str, Any]:
    """In a fresh process, like the latency benchmark, so earlier runs do not skew it."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_profile, (model_path, runs, threads, top))
