"""Print a calibration result and save it as JSON next to the config, so the site keeps a record."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars -> plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalar
        return obj.item()
    return obj


def default_report_path(config: Path, step: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return config.resolve().parent / "calibration-reports" / f"{step}-{stamp}.json"


def save_report(path: Path, step: str, result: Any, config_changes: list[Any]) -> Path | None:
    """Write the JSON report; a read-only location only costs a warning (the config matters more)."""
    payload = {
        "step": step,
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "result": to_jsonable(result),
        "config_changes": [{"key": c.key, "old": c.old, "new": c.new} for c in config_changes],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        print(f"warning: cannot save the report to {path}: {e}", file=sys.stderr)
        return None
    return path
