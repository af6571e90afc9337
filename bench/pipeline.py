"""The daemon's whole pipeline on a rendered conveyor video: as fast as possible, and paced at 30 fps."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any


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
