"""Belt speed from real video files of a synthetic textured belt moving at a known speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.belt import speed_from_encoder
from calibration.cli import main
from calibration.errors import CalibrationError
from daemon.settings import load_settings
from test_calibration_config import REPO, make_config

FPS = 25.0
W, H = 320, 240
BAND = (60, 180)  # rows of the belt in the frame
REGION = (20, 60, 280, 120)


def render_belt_video(path: Path, px_per_frame: float, frames: int = 60, seed: int = 1, vertical: bool = False) -> Path:
    """A static grey frame with a band of blurred-noise belt texture moving right (or down) at px_per_frame."""
    rng = np.random.default_rng(seed)
    span = int(abs(px_per_frame) * frames) + 2 * W + 8
    texture = cv2.GaussianBlur(rng.integers(0, 256, (H, span), dtype=np.uint8), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 20, 235, cv2.NORM_MINMAX)
    base = span - W - 4 if px_per_frame > 0 else 4
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for i in range(frames):
        # dst(x) = texture(x + base - v*i): content moves by +v px per frame.
        m = np.array([[1.0, 0.0, base - px_per_frame * i], [0.0, 1.0, 0.0]])
        moving = cv2.warpAffine(texture, m, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        if vertical:
            moving = cv2.rotate(cv2.warpAffine(texture, m, (H, W), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP),
                                cv2.ROTATE_90_CLOCKWISE)  # moves down the image
            frame = np.full((H, W), 128, np.uint8)
            frame[:, 100:220] = moving[:, 100:220]
        else:
            frame = np.full((H, W), 128, np.uint8)
            frame[BAND[0] : BAND[1]] = moving[BAND[0] : BAND[1]]
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


@pytest.mark.parametrize("px_per_frame, px_per_mm", [(6.37, 2.0), (13.9, 0.8)])
def test_video_speed_within_2_percent(tmp_path: Path, px_per_frame: float, px_per_mm: float,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    video = render_belt_video(tmp_path / "belt.avi", px_per_frame)
    cfg = make_config(tmp_path, {"belt.region": REGION, "belt.px_per_mm": px_per_mm})
    truth = px_per_frame * FPS / px_per_mm
    assert main(["belt", "--config", str(cfg), "--video", str(video), "--json"]) == 0
    out = capsys.readouterr().out
    measured = load_settings(cfg).belt.speed_mm_s
    error = abs(measured - truth) / truth
    print(f"belt speed truth {truth:.3f} measured {measured:.3f} mm/s, error {error * 100:.3f}%", file=sys.__stderr__)
    assert error < 0.02
    assert "std" in out and "belt.speed_mm_s: 300.0 ->" in out
    assert list(cfg.parent.glob("wastesort.toml.bak-*")), "a backup of the previous config is kept"
    assert list((cfg.parent / "calibration-reports").glob("belt-*.json"))


def test_rotated_region_follows_belt_rotate(tmp_path: Path) -> None:
    """A belt running down the image with belt.rotate = 270 travels left to right after rotation."""
    video = render_belt_video(tmp_path / "down.avi", 5.0, vertical=True)
    cfg = make_config(tmp_path, {"belt.region": (100, 0, 120, 240), "belt.rotate": 270, "belt.px_per_mm": 1.0})
    assert main(["belt", "--config", str(cfg), "--video", str(video)]) == 0
    assert abs(load_settings(cfg).belt.speed_mm_s - 125.0) / 125.0 < 0.02


def test_standing_belt_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = render_belt_video(tmp_path / "still.avi", 0.0, frames=15)
    cfg = make_config(tmp_path, {"belt.region": REGION})
    before = cfg.read_text()
    assert main(["belt", "--config", str(cfg), "--video", str(video)]) == 2
    assert "not moving" in capsys.readouterr().err
    assert cfg.read_text() == before


def test_backwards_belt_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = render_belt_video(tmp_path / "back.avi", -4.0, frames=15)
    cfg = make_config(tmp_path, {"belt.region": REGION})
    assert main(["belt", "--config", str(cfg), "--video", str(video)]) == 2
    assert "belt.rotate" in capsys.readouterr().err


def test_region_outside_video_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = render_belt_video(tmp_path / "b.avi", 4.0, frames=5)
    cfg = make_config(tmp_path)  # the example's region is 640x240 at y=120: larger than this 320x240 video
    assert main(["belt", "--config", str(cfg), "--video", str(video)]) == 2
    assert "outside the 320x240 image" in capsys.readouterr().err


def test_encoder_speed_and_spread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = np.arange(0, 2.01, 0.1)
    counts = np.round(t * 2000 + np.where(np.arange(len(t)) % 2, 3, 0))  # 2000 counts/s with jitter
    csv = tmp_path / "enc.csv"
    csv.write_text("time_s,count\n" + "".join(f"{a:.3f},{int(b)}\n" for a, b in zip(t, counts)))
    cfg = make_config(tmp_path)
    assert main(["belt", "--config", str(cfg), "--encoder", str(csv), "--mm-per-count", "0.15"]) == 0
    speed = load_settings(cfg).belt.speed_mm_s
    assert abs(speed - 300.0) < 1.0
    r = speed_from_encoder(t, counts, 0.15)
    assert r.std_mm_s > 0 and r.min_mm_s < 300 < r.max_mm_s
    assert "std" in capsys.readouterr().out
    with pytest.raises(CalibrationError, match="not moving"):
        speed_from_encoder(t, np.zeros_like(t), 0.15)


def test_reachable_through_wastesort_calibrate(tmp_path: Path) -> None:
    """`wastesort calibrate ...` delegates to calibration.cli.main(argv)."""
    video = render_belt_video(tmp_path / "belt.avi", 6.0, frames=12)
    cfg = make_config(tmp_path, {"belt.region": REGION, "belt.px_per_mm": 2.0})
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "calibrate", "belt", "--config", str(cfg), "--video", str(video), "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "would update" in proc.stdout and "belt.speed_mm_s" in proc.stdout
    assert load_settings(cfg).belt.speed_mm_s == 300.0  # dry run
