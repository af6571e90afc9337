"""Write calibration results into the daemon's TOML config without losing anything else.

tomlkit keeps comments, ordering and formatting of every key we do not touch. The new
file is validated with the daemon's own loader before it replaces the old one, and the
old one is kept as ``<name>.bak-<timestamp>``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from calibration.errors import CalibrationError
from daemon.settings import ConfigError, Settings, load_settings

Updates = dict[str, Any]  # dotted key ("belt.px_per_mm", "gates.2.distance_mm") -> new value


@dataclass(frozen=True)
class Change:
    """One key whose value differs between the old and the new config."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        old = "(unset)" if self.old is None else repr(self.old)
        return f"{self.key}: {old} -> {self.new!r}"


@dataclass(frozen=True)
class WriteResult:
    """What ``apply_updates`` did: the changes, and where the backup went (None if nothing was written)."""

    path: Path
    changes: list[Change]
    backup: Path | None
    written: bool


def read_config(path: Path) -> Settings:
    """The daemon's view of ``path`` (defaults, file, WASTESORT_* environment), or a clear refusal."""
    try:
        return load_settings(path)
    except ConfigError as e:
        raise CalibrationError(str(e)) from None


def _plain(value: Any) -> Any:
    """TOML-friendly form of a calibration value (tuples become arrays, paths strings)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def _unwrap(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def _set(doc: tomlkit.TOMLDocument, key: str, value: Any) -> Any:
    """Set a dotted key, creating missing tables; return the previous plain value (None if absent)."""
    parts = key.split(".")
    node: Any = doc
    for part in parts[:-1]:
        if part not in node:
            node[part] = tomlkit.table(is_super_table=False)
        node = node[part]
        if not isinstance(node, (Table, dict)):
            raise CalibrationError(f"cannot set {key}: {part} is not a table in the config")
    leaf = parts[-1]
    old = _unwrap(node[leaf]) if leaf in node else None
    node[leaf] = _plain(value)
    return old


def _copy_owner_and_mode(src: Path, dst: Path) -> None:
    """Keep e.g. root:wastesort 0640: the service reads its config through the group."""
    st = src.stat()
    shutil.copymode(src, dst)
    try:
        os.chown(dst, st.st_uid, st.st_gid)
    except PermissionError:
        pass  # not root: the file is ours anyway


def apply_updates(path: Path, updates: Updates, *, dry_run: bool = False, now: datetime | None = None) -> WriteResult:
    """Merge ``updates`` into the config at ``path``; validate, back up, replace atomically.

    Raises CalibrationError (nothing written) when the file is missing or the result would not
    pass the daemon's validation.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(
            f"config file not found: {path} (install one with systemd/install.sh or copy "
            "daemon/defaults/example.toml there)"
        ) from None
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as e:
        raise CalibrationError(f"config file {path} is not valid TOML: {e}") from None

    changes: list[Change] = []
    for key, value in updates.items():
        old = _set(doc, key, value)
        new = _plain(value)
        if old != new:
            changes.append(Change(key, old, new))
    if not changes:
        return WriteResult(path, [], None, False)

    new_text = tomlkit.dumps(doc)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
        try:
            load_settings(tmp)
        except ConfigError as e:
            raise CalibrationError(
                "refusing to write the config: the result would not pass the daemon's validation\n"
                + str(e).replace(str(tmp), str(path))
            ) from None
        if dry_run:
            return WriteResult(path, changes, None, False)
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        n = 1
        while backup.exists():  # two writes within one second keep both backups
            backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
            n += 1
        shutil.copy2(path, backup)
        _copy_owner_and_mode(path, tmp)
        os.replace(tmp, path)
        return WriteResult(path, changes, backup, True)
    finally:
        tmp.unlink(missing_ok=True)


def describe(result: WriteResult) -> str:
    """Human summary of a write, for the terminal."""
    if not result.changes:
        return f"{result.path}: already up to date, nothing written"
    lines = [f"  {c}" for c in result.changes]
    if result.written:
        head = f"updated {result.path} (backup: {result.backup}):"
    else:
        head = f"would update {result.path} (dry run, nothing written):"
    return "\n".join([head, *lines])
