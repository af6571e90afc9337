#!/usr/bin/env python3
"""Train the earlier from-scratch recipe end to end inside a fixed wall-clock budget (a lent GPU's minutes).

(The shipped model's recipe, with the pretrained EfficientNet-Lite0 teacher and cached views, is
`scripts/train-default.sh`; it has not been fitted to a budget script yet.)

A borrowed accelerator comes for a few minutes and one try, so the run must end on time
without knowing the machine's speed beforehand. Each long stage first runs 3 epochs to
measure its speed, then resumes with as many epochs as fit (the schedule is recomputed for
the new total: `--resume` keeps the step count). Stages:

1. in parallel: the teacher; the first (meta) training; optionally leave-one-class-out runs
   for the unknown-item table (`--loco-epochs`), which write their results as they go;
2. in parallel: the second training (distillation) from the meta weights (run A) and,
   with `--warm-init`, a warm restart of an existing student against the new teacher (run B).

Everything worth keeping is gathered in `--collect` (student checkpoints, logs, the LOCO
results and features in one archive, the teacher in float16 parts when they fit). Runs on
CPU too (tiny budgets, for a rehearsal). Example (one H100, 9 minutes):

    PYTHONPATH=. python3 scripts/train_gpu_budget.py --data .gpu/trashnet --split training/splits/trashnet_seed0.json \\
        --device cuda --budget 550 --warm-init model/weights/default.pt --loco-epochs 60 --collect $OUT

(docs/results.md says how the data travels with the checkout and how the results come back.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CALIBRATION_EPOCHS = 3
SAFETY = 0.88  # share of the measured time left that the planned epochs may fill
PART_BYTES = 15_000_000  # the lending tool returns files of at most 16 MiB: larger ones go in parts


@dataclass
class Stage:
    """One `wastesort-train` subprocess with its own log file."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    wall_s: float = 0.0

    def start(self, env: dict[str, str]) -> "Stage":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:  # the child keeps its own copy of the descriptor
            log.write(f"\n$ {' '.join(self.argv)}\n")
            log.flush()
            self.started = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        print(f"[{stamp()}] start {self.name}", flush=True)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait(self, deadline: float | None = None) -> int:
        """Wait until done or the deadline (monotonic); past it, stop the stage and return 124."""
        assert self.proc is not None
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            rc = 124
        self.wall_s = time.monotonic() - self.started
        print(f"[{stamp()}] {self.name} rc={rc} wall={self.wall_s:.1f}s {json.dumps(last_json_line(self.log_path))[:300]}", flush=True)
        return rc


START = time.monotonic()


class StageGroup:
    """Starts stages and, when it closes, stops whichever still run: however the driver exits,
    no training is left running behind it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stages: list[Stage] = []

    def start(self, stage: Stage) -> Stage:
        self.stages.append(stage)
        return stage.start(self.env)

    def __enter__(self) -> "StageGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        for stage in self.stages:
            stage.stop()


def stamp() -> str:
    return f"{time.monotonic() - START:6.1f}s"


def last_json_line(path: Path) -> dict:
    for line in reversed(path.read_text().splitlines() if path.is_file() else []):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return {}
    return {}


def epoch_seconds(log_jsonl: Path) -> float:
    """Seconds per epoch from the calibration run's last records (elapsed_s restarts per process)."""
    recs = [json.loads(line) for line in log_jsonl.read_text().splitlines() if line.strip()]
    recs = recs[-CALIBRATION_EPOCHS:]
    if len(recs) < 2:
        raise RuntimeError(f"{log_jsonl}: too few epochs logged to time the stage")
    return (recs[-1]["elapsed_s"] - recs[0]["elapsed_s"]) / (len(recs) - 1)


def plan_epochs(stage: Stage, log_jsonl: Path, end_at: float, cap: int) -> int:
    """Total epochs (calibration included) that end the resumed stage before `end_at`."""
    per_epoch = epoch_seconds(log_jsonl)
    overhead = max(0.0, stage.wall_s - CALIBRATION_EPOCHS * per_epoch)  # start-up + final evaluation
    left = end_at - time.monotonic() - overhead
    total = CALIBRATION_EPOCHS + int(SAFETY * left / per_epoch)
    total = max(CALIBRATION_EPOCHS, min(cap, total))
    print(f"[{stamp()}] {stage.name}: {per_epoch:.2f} s/epoch, overhead {overhead:.1f} s -> {total} epochs", flush=True)
    return total


def train_cmd(stage: str, args: argparse.Namespace, run_dir: Path, workers: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "training.cli", stage,
        "--data", str(args.data), "--run-dir", str(run_dir), "--device", args.device,
        "--workers", str(workers), "--threads", str(args.threads), *extra,
    ]  # fmt: skip


def prepare_run_dir(run_dir: Path, split: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(split, run_dir / "split.json")  # the committed split: results comparable with docs/results.md


def calibrated(name: str, args: argparse.Namespace, run_dir: Path, stage: str, workers: int, extra: list[str], group: StageGroup) -> Stage:
    return group.start(Stage(f"{name}-calibrate", train_cmd(stage, args, run_dir, workers, "--epochs", str(CALIBRATION_EPOCHS), *extra), run_dir / f"{name}.log"))


def resumed(name: str, cal: Stage, args: argparse.Namespace, run_dir: Path, stage: str, workers: int, extra: list[str], end_at: float, cap: int, group: StageGroup) -> Stage:
    epochs = plan_epochs(cal, run_dir / f"{stage}_log.jsonl", end_at, cap)
    return group.start(Stage(name, train_cmd(stage, args, run_dir, workers, "--epochs", str(epochs), "--resume", *extra), run_dir / f"{name}.log"))


def collect(args: argparse.Namespace, runs: dict[str, Path], loco_dir: Path, summary: dict[str, dict]) -> None:
    """In order of worth, while under --collect-limit-mb: the best student, logs + LOCO in one
    archive, the teacher (float16, in parts), the other students."""
    out: Path = args.collect
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.run_root / "logs.tar.gz", "w:gz") as tar:
        for rd in [*runs.values(), loco_dir]:
            for f in sorted(rd.glob("*")):
                if f.suffix in {".jsonl", ".log", ".json", ".npz"}:
                    tar.add(f, arcname=f"{rd.name}/{f.name}")
        if (args.run_root / "summary.json").is_file():
            tar.add(args.run_root / "summary.json", arcname="summary.json")
    students = sorted(
        ((name, rd / "student.pt") for name, rd in runs.items() if (rd / "student.pt").is_file()),
        key=lambda item: -float(summary.get(item[0], {}).get("val_accuracy", -1.0)),
    )
    candidates: list[tuple[str, Path]] = [(f"student_{n}.pt", f) for n, f in students[:1]]
    candidates.append(("logs.tar.gz", args.run_root / "logs.tar.gz"))
    teacher = runs["a"] / "teacher.pt"
    if teacher.is_file():
        import torch

        d = torch.load(teacher, map_location="cpu", weights_only=True)
        d["state_dict"] = {k: (v.half() if v.is_floating_point() else v) for k, v in d["state_dict"].items()}
        torch.save(d, args.run_root / "teacher_fp16.pt")
        candidates.append(("teacher_fp16.pt", args.run_root / "teacher_fp16.pt"))
    candidates += [(f"student_{n}.pt", f) for n, f in students[1:]]
    used, limit, part = 0, args.collect_limit_mb * 1e6, PART_BYTES
    for name, src in candidates:
        size = src.stat().st_size
        if used + size > limit:
            print(f"left out {name} ({size / 1e6:.1f} MB): {used / 1e6:.1f} MB already collected", flush=True)
            continue
        used += size
        if size <= part:
            shutil.copy(src, out / name)
        else:
            data = src.read_bytes()
            for i in range(0, len(data), part):
                (out / f"{name}.part{i // part}").write_bytes(data[i : i + part])
    print(f"[{stamp()}] collected {used / 1e6:.1f} MB: {sorted(p.name for p in out.iterdir())}", flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="ImageFolder root")
    p.add_argument("--split", type=Path, required=True, help="split JSON (paths relative to --data)")
    p.add_argument("--run-root", type=Path, default=Path("/tmp/wastesort-gpu"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run, collection included")
    p.add_argument("--teacher-share", type=float, default=0.45, help="share of the budget by which the teacher ends")
    p.add_argument("--reserve", type=float, default=45.0, help="seconds kept at the end for collecting")
    p.add_argument("--max-teacher-epochs", type=int, default=300)
    p.add_argument("--meta-iters", type=int, default=400)
    p.add_argument("--max-distill-epochs", type=int, default=600)
    p.add_argument("--warm-init", type=Path, default=None, help="student checkpoint to warm-restart against the new teacher (run B)")
    p.add_argument("--warm-lr", type=float, default=5e-4)
    p.add_argument("--loco-epochs", type=int, default=0, help="leave-one-class-out epochs per held-out class (0: skip)")
    p.add_argument("--loco-holdout", default="cardboard,glass,metal,paper,plastic,trash")
    p.add_argument("--workers", type=int, default=6, help="data-loading workers of each main stage")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each stage")
    p.add_argument("--collect", type=Path, default=None, help="folder that receives what is worth keeping")
    p.add_argument("--collect-limit-mb", type=float, default=62.0)
    args = p.parse_args()
    args.data = args.data.resolve()
    if not (args.data.is_dir() and args.split.is_file()):
        raise SystemExit(f"data folder {args.data} or split {args.split} missing")
    if args.run_root.exists() and any(args.run_root.iterdir()):
        raise SystemExit(f"{args.run_root} is not empty: give a fresh --run-root")
    return args


def train_all(args: argparse.Namespace, group: StageGroup, runs: dict[str, Path], loco_dir: Path) -> int:
    """The stages, in the order and overlap of the module docstring; 0 when a student was trained."""
    work_end = START + args.budget - args.reserve
    teacher_end = START + args.teacher_share * args.budget
    run_a = runs["a"]
    loco: list[Stage] = []
    if args.loco_epochs > 0:
        classes = args.loco_holdout.split(",")
        halves = [classes[: (len(classes) + 1) // 2], classes[(len(classes) + 1) // 2 :]]
        for i, part in enumerate(h for h in halves if h):
            extra = ["--holdout", ",".join(part), "--epochs", str(args.loco_epochs), "--out", str(loco_dir / f"unknown_eval_{i}.json"), "--features-out", str(loco_dir)]
            loco.append(group.start(Stage(f"loco{i}", train_cmd("unknown-eval", args, loco_dir, 2, *extra), loco_dir / f"loco{i}.log")))

    meta = group.start(Stage("meta", train_cmd("meta", args, run_a, 0, "--iterations", str(args.meta_iters)), run_a / "meta.log"))
    # this script runs the earlier recipe: an online teacher on the student's own 128x96 ImageNet-normalised input
    teacher_args = ["--arch", "resnet50", "--height", "128", "--width", "96"]
    cal = calibrated("teacher", args, run_a, "teacher", args.workers, teacher_args, group)
    if cal.wait(teacher_end) != 0:
        print(cal.log_path.read_text()[-3000:])
        return 1
    teacher = resumed("teacher", cal, args, run_a, "teacher", args.workers, teacher_args, teacher_end, args.max_teacher_epochs, group)
    teacher.wait(teacher_end + 30)
    if not (run_a / "teacher.pt").is_file():
        print(teacher.log_path.read_text()[-3000:])
        return 1
    meta.wait(time.monotonic() + 5)  # a meta run still going is stopped: its last 50-iteration checkpoint is used

    plans: list[tuple[str, list[str]]] = [("a", [])]
    if "b" in runs:
        plans.append(("b", ["--init", str(args.warm_init.resolve()), "--teacher", str(run_a / "teacher.pt"), "--lr", str(args.warm_lr)]))
    cals = [(name, extra, calibrated(f"distill-{name}", args, runs[name], "distill", args.workers, extra, group)) for name, extra in plans]
    finals = []
    for name, extra, c in cals:
        if c.wait(work_end) != 0:
            print(c.log_path.read_text()[-3000:])
            continue
        finals.append(resumed(f"distill-{name}", c, args, runs[name], "distill", args.workers, extra, work_end, args.max_distill_epochs, group))
    for f in finals:
        f.wait(work_end + 20)
    for s in loco:
        s.wait(work_end + 20)
    return 0 if any((rd / "student.pt").is_file() for rd in runs.values()) else 1


def main() -> int:
    args = parse_args()
    runs = {"a": args.run_root / "a"}
    if args.warm_init is not None:
        runs["b"] = args.run_root / "b"
    loco_dir = args.run_root / "loco"
    for rd in [*runs.values(), loco_dir]:
        prepare_run_dir(rd, args.split)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    with StageGroup(env) as group:
        rc = train_all(args, group, runs, loco_dir)
    summary = {name: last_json_line(rd / f"distill-{name}.log") for name, rd in runs.items()}
    summary["teacher"] = last_json_line(runs["a"] / "teacher.log")
    (args.run_root / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1), flush=True)
    if args.collect is not None:  # on failure too: the logs say what went wrong
        collect(args, runs, loco_dir, summary)
    print(f"[{stamp()}] done, rc={rc}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
