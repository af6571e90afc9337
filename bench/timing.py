"""Latency statistics and the machine description every benchmark records."""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class LatencyStats:
    name: str
    median_ms: float
    p95_ms: float
    runs: int
    peak_rss_mb: float
    extra: dict

    def to_dict(self) -> dict:
        return asdict(self)


def time_call(fn: Callable[[], object], warmup: int, runs: int) -> np.ndarray:
    """Wall-clock milliseconds of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1000
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stats(name: str, ms: np.ndarray, **extra: object) -> LatencyStats:
    return LatencyStats(name, float(np.median(ms)), float(np.percentile(ms, 95)), len(ms), peak_rss_mb(), dict(extra))


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
