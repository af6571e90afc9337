"""`wastesort-train teacher-cache`: the teacher's logits for K fixed views of every training photo.

Patient, consistent distillation (Beyer et al., CVPR 2022; FKD, ECCV 2022) wants the student to
match the teacher on the very view it sees, for many epochs. Running the teacher every step
costs as much as the student; here it runs once: each photo gets K view seeds
(training.views.seed_for), the teacher scores each view at its own resolution, and the file
`views.npz` keeps the seeds and logits. The student re-renders view k from its seed at its own
resolution and reads the stored logits (training.distill --views).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import get_split
from .loop import Timer, make_loader, predict_logits, resolve_device, seed_everything
from .teacher_train import load_teacher_spec
from .view_data import SeededViews, load_photos, mask_store_for, view_seeds

log = logging.getLogger(__name__)
CACHE_FORMAT = "wastesort-view-cache-1"


@dataclass
class ViewCache:
    """Seeds (N, K) and teacher logits (N, K, C) for the N training photos, in split order."""

    seeds: np.ndarray
    logits: np.ndarray
    class_names: list[str]
    photo_paths: list[str]
    teacher: str

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, format=CACHE_FORMAT, seeds=self.seeds, logits=self.logits, class_names=np.array(self.class_names), photo_paths=np.array(self.photo_paths), teacher=self.teacher)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ViewCache":
        if not path.is_file():
            raise FileNotFoundError(f"view cache not found: {path} (make it with `wastesort-train teacher-cache`)")
        d = np.load(path, allow_pickle=False)
        if str(d["format"]) != CACHE_FORMAT:
            raise ValueError(f"{path} is not a view cache of format {CACHE_FORMAT}")
        return cls(d["seeds"], d["logits"], [str(s) for s in d["class_names"]], [str(s) for s in d["photo_paths"]], str(d["teacher"]))

    def check_matches(self, class_names: list[str], photo_paths: list[str]) -> None:
        """The cache must describe exactly this split: same classes in the same order, same photos."""
        if self.class_names != list(class_names):
            raise ValueError(f"view cache classes {self.class_names} differ from the run's {class_names}")
        if self.photo_paths != list(photo_paths):
            raise ValueError("view cache was made for another training split (photo lists differ); rebuild it")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default run_dir/teacher.pt)")
    p.add_argument("--views", type=int, default=8, help="K: views per training photo")
    p.add_argument("--out", type=Path, default=None, help="default run_dir/views.npz")
    p.add_argument("--batch-size", type=int, default=64)


def run(args: argparse.Namespace) -> dict[str, float]:
    if args.views < 1:
        raise ValueError(f"--views must be >= 1, got {args.views}")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    run_dir: Path = args.run_dir
    names, train, _, _ = get_split(args.data, run_dir, args.val_fraction, args.seed)
    teacher_path = args.teacher or (run_dir / "teacher.pt")
    teacher, spec, t_names = load_teacher_spec(teacher_path, device)
    if t_names != names:
        raise ValueError(f"teacher classes {t_names} differ from the data's {names}")
    pre = spec.preprocess
    photos = load_photos(train, (pre.height, pre.width), mask_store_for(run_dir))
    seeds = view_seeds(len(train), args.views, args.seed)
    timer = Timer()
    teacher = teacher.to(memory_format=torch.channels_last)
    logits, _ = predict_logits(teacher, make_loader(SeededViews(photos, seeds, pre), args.batch_size, False, num_workers=args.workers), device)
    cache = ViewCache(seeds, logits.numpy().reshape(len(train), args.views, -1).astype(np.float32), names, [s.path for s in train], str(teacher_path))
    out = args.out or (run_dir / "views.npz")
    cache.save(out)
    labels = np.array([s.label for s in train])
    agree = float((cache.logits.argmax(2) == labels[:, None]).mean())
    log.info("teacher-cache: %d photos x %d views in %.0f s; teacher right on %.3f of the views", len(train), args.views, timer.elapsed(), agree)
    return {"photos": len(train), "views": args.views, "seconds": timer.elapsed(), "teacher_view_accuracy": agree, "out": str(out)}  # type: ignore[dict-item]
