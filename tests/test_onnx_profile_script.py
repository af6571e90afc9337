"""scripts/onnx_profile.py: ONNX Runtime's kernel time, summed by the part of the network it ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from model.checkpoint import save_checkpoint
from model.config import StudentConfig
from model.student import DistilledViT
from training.student_init import student_preprocess

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "onnx_profile.py"


def test_every_part_of_a_tuned_stem_student_with_its_descriptor_is_timed(tmp_path: Path) -> None:
    cfg = StudentConfig(num_classes=3, image_size=(64, 48), patch_size=16, stem="efficientnet_lite0", stem_stages=5,
                        stem_tuned_stages=1, d_model=32, n_layers=1, n_heads=2, d_ff=64, window_radius=1)
    model = DistilledViT(cfg).eval()
    ckpt = save_checkpoint(tmp_path / "m.pt", model, ["a", "b", "c"], student_preprocess(cfg),
                           unknown={"method": "msp", "features": "imagenet", "descriptor_blocks": 8})  # the export reads only these two
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", str(ckpt), "--runs", "3", "--threads", "1"], capture_output=True, text=True, check=True)
    out = json.loads(run.stdout)
    assert out["runs"] == 3 and out["backend"] == "onnx-int8"
    parts = out["by_part_share"]
    expected = {"descriptor", "transformer", "stem convolution", *(f"stem stage {i}" for i in range(1, 6))}
    assert expected <= set(parts), parts  # a renamed exporter scope would fall into "other"
    assert abs(sum(parts.values()) - 1) < 0.01
    assert parts["other"] < 0.5
    assert "Conv" in out["by_op_us"]
