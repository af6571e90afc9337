"""Distributed training under torchrun: 2 CPU processes with gloo, tiny config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from model import load_classifier
from model.config import tiny_config


def test_distill_under_torchrun_with_two_cpu_processes(image_folder: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_config().to_dict()))
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
        "-m", "training.cli", "distill", "--data", str(image_folder), "--run-dir", str(run),
        "--val-fraction", "0.25", "--teacher", "none", "--config", str(cfg), "--epochs", "2", "--batch-size", "4",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (run / "distill_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2], "only rank 0 writes the log, once per epoch"
    assert all(r["world_size"] == 2 for r in log)
    # 36 training images / (2 ranks x batch 4) = 4 steps per epoch and rank (not 9 as on one process)
    state = __import__("torch").load(run / "distill_state.pt", weights_only=False)
    assert state["state"]["step"] == 8
    assert load_classifier(run / "student.pt").class_names[0] == "cardboard"
