"""Replace several files as one change: all new versions, or none, and nothing left behind.

Each new file is staged next to its target, every existing target is backed up as
``<name>.bak-<stamp>``, and the staged files are moved into place (the config last). When
any step fails, the files already replaced are restored and the staged files and backups
removed, so a refused write (forgot sudo, an immutable file, a full disk) leaves the site as
it was. Symlinks are followed: the link's target is updated and the link stays.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calibration.errors import CalibrationError


@dataclass(frozen=True)
class Artefact:
    """A file to (re)write: where, and its complete new content."""

    path: Path
    data: bytes


def _why(e: OSError) -> str:
    """The likely cause of a failed write, for a technician."""
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: run with sudo, or the file or its folder is immutable/read-only (lsattr)"
    if e.errno == errno.EROFS:
        return "the filesystem is mounted read-only"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return e.strerror or str(e)


def write_refusal(path: Path, e: OSError) -> CalibrationError:
    """One line naming the file and the likely cause; nothing was changed."""
    return CalibrationError(f"cannot write {path}: {_why(e)}; nothing was changed")


def _copy_owner_and_mode(src: Path, dst: Path) -> None:
    """Keep e.g. root:wastesort 0640: the service reads its config through the group."""
    st = src.stat()
    shutil.copymode(src, dst)
    try:
        os.chown(dst, st.st_uid, st.st_gid)
    except PermissionError:
        pass  # not root: the file is ours anyway


def _backup_name(target: Path, stamp: str) -> Path:
    backup = target.with_name(f"{target.name}.bak-{stamp}")
    n = 1
    while backup.exists():  # two writes within one second keep both backups
        backup = target.with_name(f"{target.name}.bak-{stamp}-{n}")
        n += 1
    return backup


def commit_files(files: Sequence[Artefact], stamp: str) -> dict[Path, Path]:
    """Write every file or none; return {resolved target: backup of its previous version}.

    Raises CalibrationError naming the file that could not be written; everything is then as before.
    """
    staged: dict[Path, Path] = {}  # resolved target -> staged temporary file
    backups: dict[Path, Path] = {}
    replaced: list[Path] = []
    created: list[Path] = []  # folders made for new files, removed again on failure
    current = files[0].path if files else Path()
    try:
        for f in files:
            current = f.path
            target = f.path.resolve()
            created += _make_dirs(target.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged[target] = Path(tmp_name)
            with os.fdopen(fd, "wb") as fh:
                fh.write(f.data)
            if target.exists():
                _copy_owner_and_mode(target, staged[target])
        for f in files:
            current = f.path
            target = f.path.resolve()
            if target.exists():
                backup = _backup_name(target, stamp)
                shutil.copy2(target, backup)
                backups[target] = backup
        for f in files:
            current = f.path
            target = f.path.resolve()
            os.replace(staged[target], target)
            del staged[target]
            replaced.append(target)
    except OSError as e:
        _roll_back(replaced, backups)
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise write_refusal(current, e) from None
    return backups


def _make_dirs(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (outermost first)."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir()
    return list(reversed(missing))


def _roll_back(replaced: list[Path], backups: dict[Path, Path]) -> None:
    """Put back what was replaced and drop the backups (best effort: we are already failing)."""
    for target in replaced:
        try:
            if target in backups:
                os.replace(backups.pop(target), target)
            else:
                target.unlink()
        except OSError:
            pass
    for backup in backups.values():
        try:
            backup.unlink()
        except OSError:
            pass
