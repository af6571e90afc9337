"""scripts/train_gpu_budget.py: the arithmetic that fits a GPU run into its lease, and what it brings back.

The whole script is rehearsed by hand on CPU (docs/results.md); these tests pin the parts that
decide whether a one-shot GPU run ends on time and returns the right files.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_gpu_budget.py"


@pytest.fixture(scope="module")
def budget():
    spec = importlib.util.spec_from_file_location("train_gpu_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def write_log(path: Path, elapsed: list[float]) -> Path:
    path.write_text("".join(json.dumps({"epoch": i + 1, "elapsed_s": e}) + "\n" for i, e in enumerate(elapsed)))
    return path


def test_epochs_are_planned_from_the_calibration_speed(budget, tmp_path: Path) -> None:
    log = write_log(tmp_path / "distill_log.jsonl", [2.0, 4.0, 6.0])  # 2 s an epoch
    stage = budget.Stage("distill-a-calibrate", [], tmp_path / "x.log", wall_s=16.0)  # 10 s of start-up and evaluation
    assert budget.epoch_seconds(log) == pytest.approx(2.0)
    end_at = time.monotonic() + 110.0  # 100 s left once the overhead is paid: 44 epochs at the safety margin
    planned = budget.plan_epochs(stage, log, end_at, cap=1000)
    expected = budget.CALIBRATION_EPOCHS + int(budget.SAFETY * 100.0 / 2.0)
    assert expected - 1 <= planned <= expected  # the clock moves on while it plans
    assert budget.plan_epochs(stage, log, end_at, cap=20) == 20
    assert budget.plan_epochs(stage, log, time.monotonic(), cap=1000) == budget.CALIBRATION_EPOCHS  # no time: stop at calibration


def test_a_log_of_one_epoch_cannot_time_a_stage(budget, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="too few epochs"):
        budget.epoch_seconds(write_log(tmp_path / "t.jsonl", [3.0]))


def test_collect_brings_the_best_student_first_and_splits_what_is_too_big(budget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "PART_BYTES", 40_000)
    root = tmp_path / "run"
    runs = {"a": root / "a", "b": root / "b"}
    for name, size in (("a", 30_000), ("b", 30_000)):
        runs[name].mkdir(parents=True)
        (runs[name] / "student.pt").write_bytes(name.encode() * size)
        (runs[name] / "distill_log.jsonl").write_text("{}\n")
    torch.save({"state_dict": {"w": torch.ones(30_000)}, "class_names": ["x"]}, runs["a"] / "teacher.pt")  # 120 kB, 60 kB as float16
    loco = root / "loco"
    loco.mkdir()
    args = argparse.Namespace(collect=tmp_path / "out", run_root=root, collect_limit_mb=0.1)  # room for one student and the teacher
    budget.collect(args, runs, loco, {"a": {"val_accuracy": 0.70}, "b": {"val_accuracy": 0.80}})
    got = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert got == ["logs.tar.gz", "student_b.pt", "teacher_fp16.pt.part0", "teacher_fp16.pt.part1"]  # b scored higher; a did not fit
    half = (tmp_path / "out" / "teacher_fp16.pt.part0").read_bytes() + (tmp_path / "out" / "teacher_fp16.pt.part1").read_bytes()
    (tmp_path / "t.pt").write_bytes(half)
    restored = torch.load(tmp_path / "t.pt", weights_only=True)
    assert restored["state_dict"]["w"].dtype == torch.float16 and restored["class_names"] == ["x"]
