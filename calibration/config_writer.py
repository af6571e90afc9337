"""Write calibration results into the daemon's TOML config without losing anything else.

tomlkit keeps comments, ordering and formatting of every key we do not touch. The new
file is validated with the daemon's own loader (from a private temporary directory, so a
dry run needs no write access) before it replaces the old one. Files that belong with the
new config (the empty-belt image) are committed together with it by ``calibration.commit``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from calibration.commit import Artefact, commit_files
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
    """What ``apply_updates`` did: the changes, and where the backups went (None if nothing was written)."""

    path: Path
    changes: list[Change]
    backup: Path | None
    written: bool
    artefacts: list[Path] = field(default_factory=list)  # files written with the config
    artefact_backups: list[Path] = field(default_factory=list)  # their previous versions


def read_config(path: Path) -> Settings:
    """The daemon's view of ``path`` (defaults, file, WASTESORT_* environment), or a clear refusal."""
    try:
        return load_settings(path)
    except ConfigError as e:
        raise CalibrationError(str(e)) from None


def _plain(value: Any, old: Any = None) -> Any:
    """TOML-friendly form of a calibration value (tuples become arrays, paths strings).

    A whole-number float replacing a whole number stays one: ``distance_mm = 900`` becomes ``905``,
    not ``905.0`` (the daemon's models accept either; the technician's file keeps its style).
    """
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        value = float(f"{value:.6g}")
        if value.is_integer() and isinstance(old, int) and not isinstance(old, bool):
            return int(value)
    return value


def _unwrap(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def _set(doc: tomlkit.TOMLDocument, key: str, value: Any, created: list[Table]) -> tuple[Any, Any]:
    """Set a dotted key, creating missing tables (appended to ``created``); return (old, new) plain values."""
    parts = key.split(".")
    node: Any = doc
    for part in parts[:-1]:
        if part not in node:
            node[part] = tomlkit.table(is_super_table=False)
            created.append(node[part])
        node = node[part]
        if not isinstance(node, (Table, dict)):
            raise CalibrationError(f"cannot set {key}: {part} is not a table in the config")
    leaf = parts[-1]
    old = _unwrap(node[leaf]) if leaf in node else None
    new = _plain(value, old)
    node[leaf] = new
    return old, new


def _validate(new_text: str, path: Path) -> None:
    """Run the daemon's loader on ``new_text`` from a private temporary directory (no write access to ``path``'s)."""
    with tempfile.TemporaryDirectory(prefix="wastesort-calibrate-") as tmp_dir:
        tmp = Path(tmp_dir) / path.name
        tmp.write_text(new_text, encoding="utf-8")
        try:
            load_settings(tmp)
        except ConfigError as e:
            raise CalibrationError(
                "refusing to write the config: the result would not pass the daemon's validation\n"
                + str(e).replace(str(tmp), str(path))
            ) from None


def render_updates(path: Path, updates: Updates) -> tuple[str, list[Change]]:
    """The new config text and the changed keys; raises CalibrationError for a missing or broken file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(
            f"config file not found: {path} (install one with systemd/install.sh or copy "
            "daemon/defaults/example.toml there)"
        ) from None
    except OSError as e:
        raise CalibrationError(f"cannot read the config {path}: {e.strerror} (run with sudo?)") from None
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as e:
        raise CalibrationError(f"config file {path} is not valid TOML: {e}") from None
    changes: list[Change] = []
    created: list[Table] = []
    for key, value in updates.items():
        old, new = _set(doc, key, value, created)
        if old != new:
            changes.append(Change(key, old, new))
    for table in created:  # keep a blank line between a new table and the one after it
        table.add(tomlkit.nl())
    return tomlkit.dumps(doc), changes


def apply_updates(
    path: Path,
    updates: Updates,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    artefacts: Sequence[Artefact] = (),
) -> WriteResult:
    """Merge ``updates`` into the config at ``path``; validate, then write it and ``artefacts`` together.

    A symlinked config is updated through the link (the link stays). Raises CalibrationError, with
    nothing written and nothing left behind, when the file is missing, the result would not pass the
    daemon's validation, or a file cannot be written.
    """
    path = Path(path)
    new_text, changes = render_updates(path, updates)
    if not changes and not artefacts:
        return WriteResult(path, [], None, False)
    _validate(new_text, path)
    if dry_run:
        return WriteResult(path, changes, None, False)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    files = [*artefacts, Artefact(path, new_text.encode("utf-8"))] if changes else list(artefacts)
    backups = commit_files(files, stamp)
    config_backup = backups.get(path.resolve()) if changes else None
    return WriteResult(
        path, changes, config_backup, bool(changes),
        artefacts=[a.path for a in artefacts],
        artefact_backups=[b for a in artefacts if (b := backups.get(a.path.resolve())) is not None],
    )


def describe(result: WriteResult) -> str:
    """Human summary of a write, for the terminal."""
    lines = [f"  {c}" for c in result.changes]
    if not result.changes:
        head = f"{result.path}: already up to date" + ("" if result.artefacts else ", nothing written")
    elif result.written:
        head = f"updated {result.path} (backup: {result.backup}):"
    else:
        head = f"would update {result.path} (dry run, nothing written):"
    out = [head, *lines]
    for a in result.artefacts:
        prev = next((b for b in result.artefact_backups if b.name.startswith(a.name + ".bak-")), None)
        out.append(f"saved {a}" + (f" (previous: {prev})" if prev else ""))
    return "\n".join(out)
