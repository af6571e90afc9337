"""The daemon's whole pipeline on a rendered conveyor video: as fast as possible, and paced at 30 fps."""

from __future__ import annotations

import io
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

SPREAD_KEYS = ("fire_error_p99_ms", "latency_p99_ms", "latency_p50_ms")


def run_pipeline_bench(items: int, model: Path | None, backend: str) -> list[dict[str, Any]]:
    """The demo run twice with ``backend`` (the bench passes the daemon's default)."""
    from daemon.demo import DemoOptions, run_demo

    out = []
    for realtime in (False, True):
        opts = DemoOptions(items=items, realtime=realtime, json=True, model=model, backend=backend, mqtt=False)
        summary = run_demo(replace(opts), out=io.StringIO())
        summary["mode"] = "realtime-30fps" if realtime else "as-fast-as-possible"
        summary["backend"] = backend
        out.append(summary)
    return out


def run_pipeline_spread(items: int, model: Path | None, backend: str, repeat: int) -> dict[str, Any]:
    """The real-time run ``repeat`` times: min, median and max of each timing figure, since one run on a
    shared machine says little (gate timing p99 ranged 0.42-2.7 ms over 7 runs in issue 14)."""
    from daemon.demo import DemoOptions, run_demo

    runs = []
    for _ in range(repeat):
        opts = DemoOptions(items=items, realtime=True, json=True, model=model, backend=backend, mqtt=False)
        runs.append(run_demo(opts, out=io.StringIO()))
    spread: dict[str, Any] = {"runs": repeat, "items": items, "backend": backend, "mode": "realtime-30fps"}
    for key in SPREAD_KEYS:
        values = sorted(r[key] for r in runs if r.get(key) is not None)
        spread[key] = {"min": values[0], "median": statistics.median(values), "max": values[-1], "values": values} if values else None
    return spread
