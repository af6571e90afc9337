"""The belt-camera degradation taught to the student: reproducible, really lossy, and measurable."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.conveyor_sim import load_samples
from training.camera_degrade import VAL_CAMERA, CameraDegradation, degrade


def _photo() -> np.ndarray:
    _, path = load_samples()[0]
    return cv2.cvtColor(cv2.resize(cv2.imread(str(path)), (192, 256), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def test_degradation_is_a_pure_function_of_the_seed_and_loses_detail() -> None:
    rgb = _photo()
    a, b = VAL_CAMERA.apply(rgb, 7), VAL_CAMERA.apply(rgb, 7)
    assert a.shape == rgb.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(VAL_CAMERA.apply(rgb, 7), VAL_CAMERA.apply(rgb, 8))
    # fine detail (high-frequency energy) is what a smaller, compressed image loses
    def detail(x: np.ndarray) -> float:
        return float(np.abs(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_32F)).mean())

    assert detail(degrade(rgb, 0.4, 30)) < 0.7 * detail(rgb)
    assert np.array_equal(CameraDegradation(p=0.0).apply(rgb, 3), rgb)  # p = 0 leaves every view clean
    share = np.mean([not np.array_equal(CameraDegradation(p=0.5).apply(rgb, s), rgb) for s in range(200)])
    assert 0.38 < share < 0.62


@pytest.mark.parametrize("bad", [{"p": 1.5}, {"scale": (0.0, 0.5)}, {"scale": (0.8, 0.5)}, {"quality": (0, 50)}, {"quality": (90, 101)}])
def test_bad_degradation_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        CameraDegradation(**bad)


def test_stem_outputs_of_degraded_views_are_recorded_and_the_evaluation_scores_camera_views(image_folder: Path, tmp_path: Path) -> None:
    """teacher-cache --camera-degrade changes the stored stem outputs (not the teacher's targets)
    and says so in its record; evaluate --camera scores the degraded photos."""
    from training.cli import main as train_main
    from tests.test_feature_distill import _tiny_teacher

    run, common, cfg_file = _tiny_teacher(image_folder, tmp_path)
    assert train_main(["teacher-cache", *common, "--views", "2", "--student-config", str(cfg_file)]) == 0
    clean = np.load(run / "stem_features.npy").astype(np.float32)
    out = run / "stem_camera.npy"
    assert train_main(["teacher-cache", *common, "--stem-only", "--student-config", str(cfg_file), "--camera-degrade", "1.0", "--stem-out", str(out)]) == 0
    degraded = np.load(out).astype(np.float32)
    assert degraded.shape == clean.shape and not np.allclose(degraded, clean, atol=1e-2)
    assert json.loads(out.with_suffix(".json").read_text())["camera_degradation"]["p"] == 1.0
    assert train_main(["teacher-cache", *common, "--views", "2", "--camera-degrade", "0.5", "--out", str(run / "x.npz")]) == 2  # needs a student
    assert train_main(["distill", *common, "--views", str(run / "views.npz"), "--stem-features", str(out), "--config", str(cfg_file), "--epochs", "1", "--batch-size", "8"]) == 0
    log = [json.loads(line) for line in (run / "distill_log.jsonl").read_text().splitlines()]
    assert 0.0 <= log[-1]["val_camera_acc"] <= 1.0
    from training.evaluate import evaluate_checkpoint

    plain, _, _ = evaluate_checkpoint(run / "student.pt", image_folder)
    camera, _, _ = evaluate_checkpoint(run / "student.pt", image_folder, camera=True)
    assert plain.n == camera.n == 48 and plain.ece != pytest.approx(camera.ece, abs=1e-6)  # other inputs, other confidences
