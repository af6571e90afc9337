"""`export --install`: put a checkpoint where the daemon loads it, safely.

Why the checks: a fine-tuned model that learnt the site's belt but forgot the base classes
must not go live by accident, so the candidate and the installed model are scored on the
same base validation split and a candidate worse by more than ``margin`` is refused unless
forced. The old file is kept as a backup named by its checksum, the new one is written
beside the target and renamed over it (the daemon never reads half a file), and its sha256
goes next to it: the value the daemon publishes on the `model` topic after a reload.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from model.checkpoint import StudentCheckpoint, load_checkpoint
from model.inference import load_classifier

from .data import DataError, Sample, load_split, scan_image_folder, stratified_split


class InstallRefused(ValueError):
    """The candidate is worse than the installed model on the base validation split."""


@dataclass(frozen=True)
class InstallResult:
    installed: str
    checksum: str
    backup: str | None
    base_val_accuracy_new: float | None
    base_val_accuracy_installed: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def base_validation(candidate: StudentCheckpoint, base: Path | None, val_fraction: float = 0.15, seed: int = 0) -> tuple[list[str], list[Sample]]:
    """(class names, samples) of the base validation split: the one the candidate was fine-tuned
    against when its split file is still there, else a seeded stratified split of ``base``."""
    ft = candidate.meta.get("finetune") or {}
    base = base or (Path(ft["base"]) if ft.get("base") else None)
    if base is None:
        raise DataError("cannot compare with the installed model without the base dataset: pass --base DATASET "
                        "(or --force to install without the check)")
    split = Path(str(candidate.meta.get("base_split") or ""))
    if split.is_file():
        names, _, val = load_split(split, base)
        if val and all(Path(s.path).is_file() for s in val):
            return names, val
    index = scan_image_folder(base)
    _, val = stratified_split(index.samples, val_fraction, seed)
    return index.class_names, val


def base_accuracy(path: Path, names: list[str], samples: list[Sample], batch: int = 32) -> float:
    """Top-1 accuracy by class name: a model lacking a class is wrong on its images."""
    clf = load_classifier(path, backend="torch")
    correct = 0
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        images = [cv2.imread(s.path, cv2.IMREAD_COLOR) for s in chunk]
        logits, _ = clf.logits_and_features(images)
        predicted = [clf.class_names[k] for k in np.argmax(logits, axis=1)]
        correct += sum(p == names[s.label] for p, s in zip(predicted, chunk))
    return round(correct / max(1, len(samples)), 4)


def load_valid(path: Path) -> StudentCheckpoint:
    """The checkpoint, once its weights are known to fit its architecture (a clear error if not)."""
    ckpt = load_checkpoint(path)
    try:
        ckpt.build_model()
    except RuntimeError as e:
        raise ValueError(f"{path}: its weights do not fit its architecture (config d_model={ckpt.config.d_model}, "
                         f"num_classes={ckpt.config.num_classes}); nothing was written: {str(e).splitlines()[0]}") from None
    return ckpt


def install_model(candidate: Path, target: Path, base: Path | None, margin: float, force: bool) -> InstallResult:
    ckpt = load_valid(candidate)  # a broken candidate never replaces anything
    acc_new = acc_old = None
    if target.is_file() and not force:
        try:
            load_checkpoint(target)
        except ValueError:
            target_ok = False  # an unreadable installed model is no standard to meet
        else:
            target_ok = True
        if target_ok:
            names, samples = base_validation(ckpt, base)
            acc_new, acc_old = base_accuracy(candidate, names, samples), base_accuracy(target, names, samples)
            if acc_new < acc_old - margin:
                raise InstallRefused(
                    f"not installed: {candidate} scores {acc_new:.4f} on the base validation split ({len(samples)} "
                    f"images), the installed {target} {acc_old:.4f}; that is worse by more than --margin {margin}. "
                    f"Fine-tune with more base data (--base-per-class) or install anyway with --force")
    backup = None
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        backup = target.with_name(f"{target.stem}.{sha256_file(target)[:12]}.bak{target.suffix}")
        if not backup.exists():
            _copy_atomic(target, backup)
    _copy_atomic(candidate, target)
    checksum = sha256_file(target)
    sums = target.with_name(target.name + ".sha256")
    tmp = sums.with_name(sums.name + ".tmp")
    tmp.write_text(f"{checksum}  {target.name}\n")
    tmp.replace(sums)
    return InstallResult(str(target), checksum, str(backup) if backup else None, acc_new, acc_old)


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy to a temporary file beside ``dst``, flush it to disk, rename: all or nothing."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        shutil.copyfile(src, tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise ValueError(f"no space left on {dst.parent} to write {dst.name}; nothing was changed "
                             f"(free space, e.g. remove old *.bak files)") from None
        raise
