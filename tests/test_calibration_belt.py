"""Belt speed from real video files of a synthetic textured belt moving at a known speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.belt import speed_from_encoder, speed_from_frames
from calibration.cli import main
from calibration.errors import CalibrationError
from calibration.sources import FrameSource, TimedFrame
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


@pytest.fixture(scope="module")
def wide_belt_frames(tmp_path_factory: pytest.TempPathFactory) -> list[TimedFrame]:
    """A 660x260 MJPG video of a belt moving 6.37 px/frame at 25 fps, written and decoded by OpenCV."""
    path = tmp_path_factory.mktemp("wide") / "wide.avi"
    rng = np.random.default_rng(4)
    fw, fh, n, v = 660, 260, 24, 6.37
    span = int(v * n) + fw + 8
    texture = cv2.normalize(cv2.GaussianBlur(rng.integers(0, 256, (fh, span), dtype=np.uint8), (0, 0), 2.0),
                            None, 20, 235, cv2.NORM_MINMAX)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (fw, fh))
    for i in range(n):
        m = np.array([[1.0, 0.0, span - fw - 4 - v * i], [0.0, 1.0, 0.0]])
        frame = cv2.warpAffine(texture, m, (fw, fh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    with FrameSource(str(path)) as src:
        return list(src.frames())


@pytest.mark.parametrize("size", [(625, 75), (620, 100), (640, 217), (640, 221), (640, 225), (631, 99),
                                  (300, 121), (281, 120), (600, 240), (161, 75)])
def test_region_size_does_not_bias_the_speed(wide_belt_frames: list[TimedFrame], size: tuple[int, int]) -> None:
    """phaseCorrelate is biased by half a pixel on odd DFT sizes (625, 225, 75 ...): every size must read true."""
    w, h = size
    result = speed_from_frames(wide_belt_frames, (8, 8, w, h), 0, 1.0)
    truth = 6.37 * FPS
    assert abs(result.speed_mm_s - truth) / truth < (0.005 if w >= 250 else 0.01)  # short regions re-key often
    assert result.drift_deg is not None and abs(result.drift_deg) < 0.2


def test_belt_moving_across_the_region_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A belt running down the image with belt.rotate = 0: refused, and told to set --rotate."""
    video = render_belt_video(tmp_path / "down.avi", 5.0, frames=20, vertical=True)
    cfg = make_config(tmp_path, {"belt.region": (100, 0, 120, 240)})
    before = cfg.read_bytes()
    assert main(["belt", "--config", str(cfg), "--video", str(video)]) == 2
    err = capsys.readouterr().err
    assert "across the region" in err and "--rotate 90 or 270" in err
    assert cfg.read_bytes() == before and sorted(p.name for p in cfg.parent.iterdir()) == ["wastesort.toml"]


def test_erratic_speed_is_refused() -> None:
    t = np.arange(0, 2.01, 0.1)
    counts = np.cumsum(np.where(np.arange(len(t)) % 2, 2000, 10))  # alternately crawling and racing
    with pytest.raises(CalibrationError, match="no steady belt motion"):
        speed_from_encoder(t, counts, 0.15)


def test_rotate_and_region_used_are_saved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = render_belt_video(tmp_path / "down.avi", 5.0, frames=20, vertical=True)
    cfg = make_config(tmp_path, {"belt.region": REGION})
    assert main(["belt", "--config", str(cfg), "--video", str(video), "--rotate", "270",
                 "--region", "100,0,120,240"]) == 0
    s = load_settings(cfg)
    assert s.belt.rotate == 270 and s.belt.region == (100, 0, 120, 240)
    assert abs(s.belt.speed_mm_s - 125.0) / 125.0 < 0.02
    out = capsys.readouterr().out
    assert "belt.rotate: 0 -> 270" in out and "belt.region:" in out


def test_image_folder_needs_its_frame_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Frames shot at 15 fps: without --fps refused (camera.folder_fps is a playback pace); with it, true speed."""
    video = render_belt_video(tmp_path / "belt.avi", 6.0, frames=12)
    folder = tmp_path / "shots"
    folder.mkdir()
    with FrameSource(str(video)) as src:
        for f in src.frames():
            cv2.imwrite(str(folder / f"{f.index:03d}.png"), f.image)
    cfg = make_config(tmp_path, {"belt.region": REGION, "belt.px_per_mm": 2.0})
    before = cfg.read_bytes()
    assert main(["belt", "--config", str(cfg), "--video", str(folder)]) == 2
    assert "pass --fps" in capsys.readouterr().err and cfg.read_bytes() == before
    assert main(["belt", "--config", str(cfg), "--video", str(folder), "--fps", "15"]) == 0
    assert abs(load_settings(cfg).belt.speed_mm_s - 45.0) / 45.0 < 0.02  # 6 px/frame * 15 fps / 2 px/mm
    assert "timing: image folder at 15 fps" in capsys.readouterr().out


def test_max_frames_beyond_the_video_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = render_belt_video(tmp_path / "belt.avi", 6.0, frames=12)
    cfg = make_config(tmp_path, {"belt.region": REGION, "belt.px_per_mm": 2.0})
    assert main(["belt", "--config", str(cfg), "--video", str(video), "--max-frames", "100", "--dry-run"]) == 0
    assert "--max-frames 100, but" in capsys.readouterr().out
