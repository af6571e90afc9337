"""Every student config under training/configs is one a run can start from: it parses (no unknown
key), builds, and gives one logit per class at its own input size. A broken file would otherwise
surface only after an hour of teacher and cache work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.config import StudentConfig
from model.student import DistilledViT, inference_logits

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "training" / "configs").glob("*.json"))


def test_there_are_configs() -> None:
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_committed_config_builds_and_classifies(path: Path) -> None:
    cfg = StudentConfig.from_dict({**json.loads(path.read_text()), "num_classes": 6})
    model = DistilledViT(cfg).eval()
    assert len(model.blocks) == cfg.n_layers
    height, width = cfg.image_size
    with torch.no_grad():
        logits = inference_logits(model(torch.randn(1, 3, height, width)))
    assert logits.shape == (1, 6) and torch.isfinite(logits).all()
