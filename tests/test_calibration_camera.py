"""Camera step on real image files and a real video: region, median background, quality, refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import preview
from calibration.camera import measure_quality
from calibration.cli import main
from daemon.detect import BeltDetector
from daemon.cli import cmd_check_config
from daemon.settings import DetectSettings, load_settings
from test_calibration_config import make_config

W, H = 320, 240
REGION = (20, 60, 280, 120)
ITEM = (40, 30)  # item width, height in px


def scene(seed: int = 3) -> np.ndarray:
    """The empty belt: a textured band across a grey frame."""
    rng = np.random.default_rng(seed)
    frame = np.full((H, W, 3), 70, np.uint8)
    band = cv2.GaussianBlur(rng.integers(60, 200, (120, W, 3), dtype=np.uint8), (0, 0), 1.5)
    frame[60:180] = band
    return frame


def with_item(background: np.ndarray, x: int, y: int = 100) -> np.ndarray:
    img = background.copy()
    cv2.rectangle(img, (x, y), (x + ITEM[0] - 1, y + ITEM[1] - 1), (20, 230, 250), -1)
    return img


def write_frames(folder: Path, n: int = 15) -> np.ndarray:
    """Noisy frames of the belt with an item crossing it; returns the noise-free empty belt."""
    folder.mkdir(parents=True, exist_ok=True)
    bg = scene()
    rng = np.random.default_rng(7)
    for i in range(n):
        img = with_item(bg, 10 + i * 20)  # each pixel is covered in at most 2 of the 15 frames
        noisy = np.clip(img.astype(np.int16) + rng.normal(0, 4, img.shape).round().astype(np.int16), 0, 255)
        cv2.imwrite(str(folder / f"f{i:03d}.png"), noisy.astype(np.uint8))
    return bg


def test_region_and_median_background_from_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = write_frames(tmp_path / "frames")
    cfg = make_config(tmp_path)
    region = ",".join(map(str, REGION))
    assert main(["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--region", region]) == 0
    s = load_settings(cfg)
    assert s.belt.region == REGION
    bg_path = s.detect.background_image
    assert bg_path == (cfg.parent / "empty-belt.png").resolve()
    saved = cv2.imread(str(bg_path))
    x, y, w, h = REGION
    expected = truth[y : y + h, x : x + w]
    assert saved.shape == expected.shape
    diff = np.abs(saved.astype(int) - expected.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99.9) < 12  # the item is gone, noise averaged out

    # The daemon's detector, given this background, finds exactly the item and nothing on an empty belt.
    det = BeltDetector(DetectSettings(background_image=bg_path, background_alpha=0.0))
    found = det.detect(with_item(truth, 150)[y : y + h, x : x + w])
    assert len(found) == 1 and abs(found[0].x - (150 - x)) <= 3 and abs(found[0].w - ITEM[0]) <= 6
    assert det.detect(expected) == []

    out = capsys.readouterr().out
    assert "sharpness (Laplacian variance)" in out and "brightness" in out
    assert "belt.region: [0, 120, 640, 240] -> [20, 60, 280, 120]" in out


def test_background_follows_belt_rotate(tmp_path: Path) -> None:
    write_frames(tmp_path / "frames", n=5)
    cfg = make_config(tmp_path, {"belt.rotate": 90, "gates.1.distance_mm": 2000.0, "gates.2.distance_mm": 2100.0,
                                 "gates.3.distance_mm": 2200.0, "gates.4.distance_mm": 2300.0})
    bg = tmp_path / "bg.png"
    argv = ["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--region", "20,60,280,120",
            "--background", str(bg)]
    assert main(argv) == 0
    assert cv2.imread(str(bg)).shape[:2] == (280, 120)  # the daemon compares it with the rotated crop


def test_region_from_a_real_video(tmp_path: Path) -> None:
    video = tmp_path / "belt.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (W, H))
    bg = scene()
    for i in range(9):
        writer.write(with_item(bg, 20 + i * 30))
    writer.release()
    cfg = make_config(tmp_path)
    assert main(["camera", "--config", str(cfg), "--source", str(video), "--region", "0,60,320,120",
                 "--frames", "9", "--lock"]) == 0
    saved = cv2.imread(str(load_settings(cfg).detect.background_image))
    assert np.abs(saved.astype(int) - bg[60:180].astype(int)).mean() < 4.0  # MJPG loses a little


def test_lock_on_a_file_source_says_it_cannot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path)
    argv = ["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--region", "0,60,320,120", "--lock"]
    assert main(argv) == 0
    assert "exposure and white balance cannot be locked" in capsys.readouterr().out


@pytest.mark.parametrize("region", ["300,60,100,120", "0,200,320,60", "-5,0,100,100"])
def test_region_outside_image_is_refused(tmp_path: Path, region: str, capsys: pytest.CaptureFixture[str]) -> None:
    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    assert main(["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), f"--region={region}"]) == 2
    assert "outside the 320x240 image" in capsys.readouterr().err
    assert cfg.read_text() == before and not (cfg.parent / "empty-belt.png").exists()


def test_missing_source_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    assert main(["camera", "--config", str(cfg), "--source", str(tmp_path / "nope.mp4"), "--region", "0,0,64,64"]) == 2
    assert "video file not found" in capsys.readouterr().err


def test_interactive_selection_without_display_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--select", "--preview"]) == 2
    err = capsys.readouterr().err
    assert "preview disabled: no display" in err and "pass --region" in err


def test_preview_degrades_on_headless_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """With a display but the headless OpenCV build, the step runs on and says why there is no window."""
    monkeypatch.setenv("DISPLAY", ":99")
    if preview.gui_unavailable_reason() is None:
        pytest.skip("this OpenCV build has a GUI")
    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path)
    argv = ["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--region", "0,60,320,120",
            "--preview"]
    assert main(argv) == 0
    assert "no GUI support (opencv-python-headless)" in capsys.readouterr().err
    assert load_settings(cfg).belt.region == (0, 60, 320, 120)


def test_quality_figures() -> None:
    sharp = np.random.default_rng(0).integers(40, 210, (120, 320, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    assert measure_quality(sharp).sharpness > 5 * measure_quality(blurred).sharpness
    assert any("low sharpness" in w for w in measure_quality(blurred).warnings)
    over = sharp.copy()
    over[:60] = 255
    q = measure_quality(over)
    assert 45 < q.bright_clipped_pct < 55 and q.dark_clipped_pct == 0
    assert any("clipped white" in w for w in q.warnings)
    dark = measure_quality(np.zeros((50, 50, 3), np.uint8))
    assert dark.brightness == 0 and dark.dark_clipped_pct == 100


class DriverStandIn:
    """A cv2.VideoCapture look-alike whose driver honours exposure but ignores white balance."""

    def __init__(self) -> None:
        self.values = {cv2.CAP_PROP_AUTO_EXPOSURE: 3.0, cv2.CAP_PROP_EXPOSURE: 156.0,
                       cv2.CAP_PROP_AUTO_WB: 1.0, cv2.CAP_PROP_WB_TEMPERATURE: 4600.0}

    def set(self, prop: int, value: float) -> bool:
        if prop in (cv2.CAP_PROP_AUTO_WB, cv2.CAP_PROP_WB_TEMPERATURE):
            return True  # claims success, changes nothing: what many UVC drivers do
        self.values[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.values.get(prop, 0.0)


def test_lock_reads_back_and_reports_ignored_controls() -> None:
    from calibration.camera import lock_controls

    cam = DriverStandIn()
    wanted, reports = lock_controls(cam, exposure=None, white_balance_k=5000.0)  # type: ignore[arg-type]
    by_name = {r.name: r for r in reports}
    assert by_name["auto_exposure"].applied and cam.values[cv2.CAP_PROP_AUTO_EXPOSURE] == 1.0
    assert by_name["exposure"].applied and wanted["exposure"] == 156.0  # locked at the current value
    assert not by_name["auto_white_balance"].applied and by_name["auto_white_balance"].read_back == 1.0
    assert not by_name["white_balance_temperature"].applied
    assert by_name["white_balance_temperature"].read_back == 4600.0


def belt_video(path: Path, n: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (W, H))
    for i in range(n):
        writer.write(with_item(scene(), 20 + i * 30))
    writer.release()
    return path


def test_lock_on_a_synthetic_camera_saves_nothing_the_driver_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A real video opened as a camera: OpenCV's file backend takes no CAP_PROP set and reads back 0."""
    from calibration import sources

    video = belt_video(tmp_path / "cam.avi")
    monkeypatch.setattr(sources, "source_kind", lambda source: "camera")
    cfg = make_config(tmp_path)
    argv = ["camera", "--config", str(cfg), "--source", str(video), "--region", "0,60,320,120", "--frames", "6",
            "--lock", "--exposure", "120", "--white-balance", "5200"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "camera control exposure: requested 120, read back 0 (IGNORED by the driver)" in out
    assert "camera control white_balance_temperature: requested 5200, read back 0 (IGNORED" in out
    assert "the camera driver ignored: auto_exposure, exposure, white_balance_temperature (not saved)" in out
    c = load_settings(cfg).camera
    assert c.exposure is None and c.auto_exposure is None and c.white_balance_temperature is None
    assert c.auto_white_balance is False  # 0 requested, 0 read back: taken
    assert (c.width, c.height) == (W, H)  # the resolution belt.region was measured at
    assert cmd_check_config(cfg) == 0


OPENCV_VIDEO_CAPTURE = cv2.VideoCapture  # the real one, before a test replaces it


class SyntheticCamera(DriverStandIn):
    """Real frames from a video file behind the stand-in driver (exposure honoured, white balance ignored)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self._video = OPENCV_VIDEO_CAPTURE(source)

    def isOpened(self) -> bool:  # noqa: N802 (mirrors cv2.VideoCapture)
        return self._video.isOpened()

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self._video.read()

    def release(self) -> None:
        self._video.release()


def test_lock_saves_the_controls_the_daemon_reapplies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from calibration import sources
    from daemon.camera_controls import apply_controls, configured_controls

    video = belt_video(tmp_path / "cam.avi")
    monkeypatch.setattr(sources, "source_kind", lambda source: "camera")
    monkeypatch.setattr(sources.cv2, "VideoCapture", SyntheticCamera)
    cfg = make_config(tmp_path)
    argv = ["camera", "--config", str(cfg), "--source", str(video), "--region", "0,60,320,120", "--frames", "6",
            "--exposure", "250"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "camera.exposure: (unset) -> 250.0" in out and "camera.auto_exposure: (unset) -> False" in out
    assert "white_balance_temperature: requested 4600, read back 4600 (applied)" in out  # ignored, but unchanged
    assert "auto_white_balance: requested 0, read back 1 (IGNORED" in out
    c = load_settings(cfg).camera
    assert (c.auto_exposure, c.exposure, c.auto_white_balance) == (False, 250.0, None)
    assert cmd_check_config(cfg) == 0

    # After a power cycle the camera is back on auto; the daemon's capture puts back what was saved.
    cam = DriverStandIn()
    reports = apply_controls(cam, configured_controls(c))  # type: ignore[arg-type]
    assert cam.values[cv2.CAP_PROP_EXPOSURE] == 250.0 and cam.values[cv2.CAP_PROP_AUTO_EXPOSURE] == 1.0
    assert all(r.applied for r in reports if r.name in ("auto_exposure", "exposure"))


def test_dry_run_writes_neither_config_nor_background(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    argv = ["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--region", "0,60,320,120",
            "--dry-run"]
    assert main(argv) == 0
    assert cfg.read_text() == before and not (cfg.parent / "empty-belt.png").exists()
    out = capsys.readouterr().out
    assert "would update" in out and "detect.background_image" in out


def test_refused_run_keeps_the_live_background_and_a_new_one_backs_it_up(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Config and image change together: a refusal (gate 1 inside the new region) writes neither."""
    write_frames(tmp_path / "frames", n=5)
    cfg = make_config(tmp_path, {"belt.px_per_mm": 0.3, "belt.region": (20, 60, 200, 120)})  # 667 mm < gate 1
    frames = str(tmp_path / "frames")
    assert main(["camera", "--config", str(cfg), "--source", frames, "--region", "20,60,200,120"]) == 0
    bg = cfg.parent / "empty-belt.png"
    live = bg.read_bytes()
    config_before = cfg.read_bytes()
    # 280 px / 0.3 px/mm = 933 mm: gate 1 at 900 mm would be inside the region.
    assert main(["camera", "--config", str(cfg), "--source", frames, "--region", "20,60,280,120"]) == 2
    assert "gates.1.distance_mm" in capsys.readouterr().err
    assert bg.read_bytes() == live and cfg.read_bytes() == config_before
    assert not list(cfg.parent.glob("empty-belt.png.bak-*")) and not list(cfg.parent.glob(".*.tmp"))
    # An accepted new background keeps the previous one as a backup.
    assert main(["camera", "--config", str(cfg), "--source", frames, "--region", "30,60,200,120"]) == 0
    backups = list(cfg.parent.glob("empty-belt.png.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == live
    assert "previous: " in capsys.readouterr().out


def test_unwritable_background_folder_changes_neither_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_calibration_config import immutable

    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path)
    before = cfg.read_bytes()
    locked = tmp_path / "locked"
    locked.mkdir()
    with immutable(locked):
        argv = ["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--region", "20,60,280,120",
                "--background", str(locked / "bg.png")]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "bg.png" in err and "Traceback" not in err
    assert cfg.read_bytes() == before and sorted(p.name for p in cfg.parent.iterdir()) == ["wastesort.toml"]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.mark.parametrize("level, what", [(0, "black"), (255, "white"), (128, "flat colour")])
def test_nonsense_background_is_refused(tmp_path: Path, level: int, what: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "cap.avi", [np.full((H, W, 3), level, np.uint8)] * 5)
    cfg = make_config(tmp_path)
    before = cfg.read_bytes()
    assert main(["camera", "--config", str(cfg), "--source", str(video), "--region", "20,60,280,120"]) == 2
    err = capsys.readouterr().err
    assert what in err and "lens cap" in err
    assert cfg.read_bytes() == before and sorted(p.name for p in cfg.parent.iterdir()) == ["wastesort.toml"]


def test_frames_beyond_the_video_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "short.avi", [with_item(scene(), 20 + 30 * i) for i in range(6)])
    cfg = make_config(tmp_path)
    assert main(["camera", "--config", str(cfg), "--source", str(video), "--region", "0,60,320,120",
                 "--frames", "100", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "warning: asked for 100 frames" in out and "delivered only 6" in out


def test_region_defaults_to_the_configured_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path, {"belt.region": (10, 50, 300, 140)})
    assert main(["camera", "--config", str(cfg), "--source", str(tmp_path / "frames")]) == 0
    assert "(belt.region from the config)" in capsys.readouterr().out
    assert cv2.imread(str(load_settings(cfg).detect.background_image)).shape[:2] == (140, 300)


def test_snapshot_draws_grid_region_and_gates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Over SSH: a PNG with the grid, the configured region (green) and gate lines (red) where the config puts them."""
    write_frames(tmp_path / "frames", n=1)
    cfg = make_config(tmp_path, {"belt.region": (20, 60, 100, 120), "belt.px_per_mm": 0.1,
                                 "gates.1.distance_mm": 1500.0, "gates.2.distance_mm": 2000.0,
                                 "gates.3.distance_mm": 2500.0, "gates.4.distance_mm": 9000.0})
    before = cfg.read_bytes()
    out = tmp_path / "snap.png"
    assert main(["snapshot", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--out", str(out)]) == 0
    img = cv2.imread(str(out))
    assert img.shape == (H, W, 3)
    green = (img[:, :, 1] > 200) & (img[:, :, 0] < 60) & (img[:, :, 2] < 60)
    red = (img[:, :, 2] > 200) & (img[:, :, 0] < 60) & (img[:, :, 1] < 60)
    assert green[60, 20:120].mean() > 0.9 and green[60:180, 20].mean() > 0.9  # region outline
    for x in (20 + 150, 20 + 200, 20 + 250):  # gates 1-3 at distance * px_per_mm from the upstream edge
        assert red[70:170, x - 1 : x + 2].any(axis=1).mean() > 0.9
    grid = np.all(img == (90, 90, 90), axis=2)
    assert grid[:, 200].mean() > 0.3 and grid[200, :].mean() > 0.3  # grid lines every 50 px
    text = capsys.readouterr().out
    assert str(out) in text and "scp" in text
    assert cfg.read_bytes() == before and not (cfg.parent / "calibration-reports").exists()


def test_camera_rotate_is_used_and_saved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--rotate sets belt.rotate (no other way to set it) and the background is cropped with it."""
    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path, {"gates.1.distance_mm": 2000.0, "gates.2.distance_mm": 2100.0,
                                 "gates.3.distance_mm": 2200.0, "gates.4.distance_mm": 2300.0})
    argv = ["camera", "--config", str(cfg), "--source", str(tmp_path / "frames"), "--region", "20,60,280,120",
            "--rotate", "270"]
    assert main(argv) == 0
    s = load_settings(cfg)
    assert s.belt.rotate == 270 and cv2.imread(str(s.detect.background_image)).shape[:2] == (280, 120)
    assert "belt.rotate: 0 -> 270" in capsys.readouterr().out


def test_unwritable_config_puts_the_new_background_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The image is replaced before the config; when the config then cannot be replaced, the old image returns."""
    from test_calibration_config import immutable

    write_frames(tmp_path / "frames", n=3)
    cfg = make_config(tmp_path)
    frames = str(tmp_path / "frames")
    assert main(["camera", "--config", str(cfg), "--source", frames, "--region", "20,60,200,120"]) == 0
    for b in cfg.parent.glob("*.bak-*"):
        b.unlink()
    bg = cfg.parent / "empty-belt.png"
    live, config_before = bg.read_bytes(), cfg.read_bytes()
    with immutable(cfg):
        assert main(["camera", "--config", str(cfg), "--source", frames, "--region", "20,60,280,120"]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert bg.read_bytes() == live and cfg.read_bytes() == config_before
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["calibration-reports", "empty-belt.png", "wastesort.toml"]


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_snapshot_gate_lines_follow_belt_rotate(rotate: int) -> None:
    """A line drawn d px downstream in the image is column d of the crop the daemon sees (crop, then rotate)."""
    from calibration.camera import crop_region
    from calibration.snapshot import gate_line

    region = (30, 20, 200, 160)
    for d in (0, 37, 120):
        img = np.zeros((H, W), np.uint8)
        p, q = gate_line(region, rotate, d)
        cv2.line(img, p, q, 255, 1)
        crop = crop_region(img, region, rotate)
        assert crop[:, d].min() == 255 and crop.sum() == 255 * crop.shape[0]
