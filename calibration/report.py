"""Print a calibration result and save it as JSON next to the config, so the site keeps a record.

Every report gets its own file: names carry microseconds and are created exclusively, so a
later run can never replace the record of an earlier one.
"""

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
    """``<config dir>/calibration-reports/<step>-<UTC time to the microsecond>.json``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S.%fZ")
    return config.resolve().parent / "calibration-reports" / f"{step}-{stamp}.json"


def _create_new(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` or, when it exists, to ``<stem>-1<suffix>``, ``-2``, ...; never overwrite."""
    candidate, n = path, 0
    while True:
        try:
            with candidate.open("x", encoding="utf-8") as f:
                f.write(text)
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")


def save_report(path: Path, step: str, result: Any, config_changes: list[Any], *, dry_run: bool = False) -> Path | None:
    """Write the JSON report; a read-only location only costs a warning (the config matters more)."""
    payload = {
        "step": step,
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "dry_run": dry_run,  # True: config_changes were NOT written
        "result": to_jsonable(result),
        "config_changes": [{"key": c.key, "old": c.old, "new": c.new} for c in config_changes],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _create_new(path, json.dumps(payload, indent=2) + "\n")
    except OSError as e:
        print(f"warning: cannot save the report to {path}: {e.strerror or e}", file=sys.stderr)
        return None
