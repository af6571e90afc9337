"""Capture: one-slot hand-off, real-time pacing vs. lossless fast mode, failing sources, bad frames."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from daemon_fixtures import make_settings, tiny_classifier, tiny_model_path, wait_for  # noqa: F401

from daemon.capture import CaptureThread, Frame, FrameSlot, classify_source
from daemon.metrics import PipelineMetrics
from daemon.pipeline import Pipeline
from daemon.settings import CameraSettings


def write_video(path: Path, n: int, fps: float = 30.0, size: tuple[int, int] = (160, 120)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    for k in range(n):
        img = np.full((size[1], size[0], 3), 60, np.uint8)
        cv2.putText(img, str(k), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        w.write(img)
    w.release()
    return path


def damage_frames(path: Path, frames: list[int], seed: int = 0) -> None:
    """Overwrite the JPEG data of the given frames of an MJPG .avi with random bytes (chunk sizes stay valid)."""
    data = bytearray(path.read_bytes())
    pos = data.index(b"movi") + 4
    rng = np.random.default_rng(seed)
    k = 0
    while pos + 8 <= len(data) and data[pos : pos + 4] != b"idx1":
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos + 2 : pos + 4] == b"dc":
            if k in frames:
                data[pos + 8 : pos + 8 + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            k += 1
        pos += 8 + size + (size & 1)
    assert k > max(frames), "not an MJPG .avi with that many frames"
    path.write_bytes(bytes(data))


class Alerts:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, kind: str, message: str) -> None:
        self.items.append((kind, message))


def consume(slot: FrameSlot, per_frame_s: float) -> list[Frame]:
    got: list[Frame] = []
    while True:
        f = slot.get(0.1)
        if f is None:
            if slot.closed:
                return got
            continue
        got.append(f)
        time.sleep(per_frame_s)


def test_slot_keeps_only_the_latest_frame() -> None:
    slot = FrameSlot()
    img = np.zeros((2, 2, 3), np.uint8)
    assert slot.put(Frame(0, 0.0, img), wait=False) is False
    assert slot.put(Frame(1, 0.1, img), wait=False) is True  # frame 0 dropped
    got = slot.get(0.1)
    assert got is not None and got.index == 1
    assert slot.get(0.01) is None


def test_source_kinds(tmp_path: Path) -> None:
    assert classify_source("0") == "camera"
    assert classify_source("/dev/video2") == "camera"
    assert classify_source("rtsp://cam/stream") == "stream"
    assert classify_source(str(tmp_path)) == "folder"
    assert classify_source(str(tmp_path / "a.avi")) == "file"


def test_as_fast_as_possible_never_drops(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 40)
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    cap = CaptureThread(CameraSettings(source=str(video), realtime=False), slot, m, alerts).start()
    frames = consume(slot, per_frame_s=0.005)  # a worker slower than decoding
    cap.join(5)
    assert [f.index for f in frames] == list(range(40))
    assert m.dropped_frames == 0 and m.captured.total == 40
    assert all(b.t_capture > a.t_capture for a, b in zip(frames, frames[1:]))
    # The belt-motion clock follows the video, not the (waiting) reader: exactly 1/fps per frame.
    steps = np.diff([f.t_belt for f in frames])
    assert np.allclose(steps, 1 / 30.0, atol=1e-6)


def test_realtime_paces_at_file_fps_and_drops_for_a_slow_worker(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 30, fps=30.0)
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    t0 = time.monotonic()
    cap = CaptureThread(CameraSettings(source=str(video), realtime=True), slot, m, alerts).start()
    frames = consume(slot, per_frame_s=0.1)  # 10 fps worker on a 30 fps source
    cap.join(5)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed <= 2.0
    assert m.dropped_frames > 5
    assert len(frames) + m.dropped_frames == 30  # each frame either processed or counted as dropped
    stamps = [f.t_capture for f in frames]
    assert stamps[-1] - stamps[0] >= 0.8  # timestamps follow the real-time pacing
    # The belt-motion clock is the video's own, not the (jittery) moment each frame was read.
    assert np.allclose(np.diff([f.t_belt for f in frames]), np.diff([f.index for f in frames]) / 30.0, atol=1e-6)


def test_a_video_file_that_vanishes_after_start_up_is_retried_with_alerts_then_recovers(tmp_path: Path) -> None:
    path = write_video(tmp_path / "late.avi", 2)
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    s = CameraSettings(source=str(path), realtime=False, reconnect_delay_s=0.1, reconnect_max_delay_s=0.2)
    path.unlink()  # configured while it was there (a missing file is a configuration error), then moved away
    cap = CaptureThread(s, slot, m, alerts).start()
    assert wait_for(lambda: len(alerts.items) >= 2, 3)
    assert all(k == "camera_lost" for k, _ in alerts.items)
    write_video(tmp_path / "tmp.avi", 5).rename(path)  # the source comes back
    frames = consume(slot, 0)
    cap.join(5)
    assert len(frames) == 5
    assert alerts.items[-1][0] == "camera_restored"
    assert m.camera_failures >= 2


def test_gives_up_after_max_failures(tmp_path: Path) -> None:
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    s = CameraSettings(source="/dev/video99", reconnect_delay_s=0.05, max_failures=3)
    cap = CaptureThread(s, slot, m, alerts).start()
    cap.join(5)
    assert cap.failed is not None and "/dev/video99" in cap.failed
    assert [k for k, _ in alerts.items] == ["camera_lost"] * 3
    assert slot.closed  # the worker is told the stream ended


def test_corrupt_and_odd_sized_frames_are_skipped_and_counted(tmp_path: Path, tiny_classifier) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    good = np.full((240, 640, 3), 70, np.uint8)
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.png"), good)
    (folder / "002a.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")  # undecodable
    cv2.imwrite(str(folder / "004a.png"), np.zeros((100, 700, 3), np.uint8))  # too small for the region
    cv2.imwrite(str(folder / "005a.png"), np.zeros((300, 700, 3), np.uint8))  # fits, but a different size
    settings = make_settings(folder, serial_port=None, camera={"source": str(folder), "realtime": False})
    p = Pipeline(settings, classifier=tiny_classifier).start()
    assert p.wait_source_done(20)
    summary = p.stop()
    assert summary.bad_frames == 3
    assert summary.frames_processed == 8  # 6 good + 2 odd-sized (decoded, then rejected by the worker)
    assert any(a["kind"] == "region_outside_frame" for a in p.alerts)


def test_damaged_video_file_is_processed_to_the_end_without_crashing(tmp_path: Path, tiny_classifier) -> None:
    from daemon_fixtures import belt_video

    video = belt_video(tmp_path / "belt.avi", 4)
    data = bytearray(video.path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 30000] = bytes(30000)  # a burst of zeros in the middle of the stream
    video.path.write_bytes(bytes(data))
    settings = make_settings(video, serial_port=None, camera={"realtime": False})
    p = Pipeline(settings, classifier=tiny_classifier).start()
    assert p.wait_source_done(30)
    summary = p.stop()
    assert 0 < summary.frames_processed <= video.n_frames
    assert summary.items >= 2  # the undamaged parts still sort their items
    assert not [a for a in p.alerts if a["kind"] == "frame_failed"]


class FlakyCamera:
    """A live camera stand-in: delivers ``n`` frames, then fails like an unplugged USB camera."""

    def __init__(self, n: int) -> None:
        self.n = n

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.n == 0:
            return False, None
        self.n -= 1
        time.sleep(0.01)
        return True, np.zeros((120, 160, 3), np.uint8)

    def release(self) -> None:
        pass


def test_live_camera_that_drops_out_is_reopened_with_alerts(monkeypatch) -> None:
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    s = CameraSettings(source="/dev/video77", reconnect_delay_s=0.05, reconnect_max_delay_s=0.1)
    cap = CaptureThread(s, slot, m, alerts)
    assert cap.is_live
    opens = iter([FlakyCamera(3), OSError("cannot open camera source '/dev/video77'"), FlakyCamera(1000)])

    def fake_open() -> tuple[FlakyCamera, float]:
        nxt = next(opens)
        if isinstance(nxt, Exception):
            raise nxt
        return nxt, 30.0

    monkeypatch.setattr(cap, "_open", fake_open)
    cap.start()
    got: list[Frame] = []
    end = time.monotonic() + 5
    while len(got) < 8 and time.monotonic() < end:
        f = slot.get(0.05)
        if f is not None:
            got.append(f)
    cap.stop()
    assert len(got) >= 8
    kinds = [k for k, _ in alerts.items]
    assert kinds == ["camera_lost", "camera_lost", "camera_restored"]
    assert "stopped delivering" in alerts.items[0][1]
    assert m.camera_failures == 2
    indices = [f.index for f in got]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)  # numbering continues


def test_camera_controls_are_reapplied_at_every_reopen_and_ignored_values_alerted(tmp_path: Path, monkeypatch) -> None:
    """A video file opened as if it were a camera: it 'fails' at its end and is reopened like an unplugged
    camera. OpenCV ignores exposure for files, so each (re)open must produce the driver-ignored warning."""
    import structlog

    from daemon import capture

    video = write_video(tmp_path / "cam.avi", 3)
    monkeypatch.setattr(capture, "classify_source", lambda source: "camera")
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    s = CameraSettings(source=str(video), auto_exposure=False, exposure=120.0, width=160, height=120,
                       reconnect_delay_s=0.05, reconnect_max_delay_s=0.05)
    cap = CaptureThread(s, slot, m, alerts)
    assert cap.is_live
    with structlog.testing.capture_logs() as logs:
        cap.start()
        assert wait_for(lambda: sum(k == "camera_controls_ignored" for k, _ in alerts.items) >= 2, 5)
        cap.stop()
    kinds = [k for k, _ in alerts.items]
    first = kinds.index("camera_controls_ignored")
    assert "camera_lost" in kinds[first:]  # the second one came with a reopen
    message = dict(alerts.items)["camera_controls_ignored"]
    assert "camera.exposure (requested 120, read back 0)" in message and "camera.auto_exposure" in message
    assert "camera.width" not in message  # the file's real size reads back as requested
    warnings = [e for e in logs if e["event"] == "camera_controls_ignored"]
    assert len(warnings) >= 2 and warnings[0]["log_level"] == "warning"
    assert set(warnings[0]["ignored"]) == {"auto_exposure", "exposure"}


def test_camera_controls_are_not_applied_to_files(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 5)
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    s = CameraSettings(source=str(video), realtime=False, exposure=120.0, auto_exposure=False)
    cap = CaptureThread(s, slot, m, alerts).start()
    assert len(consume(slot, 0)) == 5
    cap.join(5)
    assert alerts.items == []


def test_one_damaged_frame_is_skipped_and_counted_not_taken_for_the_end(tmp_path: Path) -> None:
    # Issue 14, defect 2: read() failed on frame 20 and the run ended there, silently.
    video = write_video(tmp_path / "v.avi", 40)
    damage_frames(video, [20])
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    cap = CaptureThread(CameraSettings(source=str(video), realtime=False), slot, m, alerts).start()
    frames = consume(slot, per_frame_s=0)
    cap.join(5)
    assert [f.index for f in frames] == [k for k in range(40) if k != 20]
    assert m.undecodable_frames == 1 and cap.failed is None
    # The frame after the gap keeps its place in video time: the belt model is not shifted by a frame.
    after = next(f for f in frames if f.index == 21)
    assert abs(after.t_belt - frames[0].t_belt - 21 / 30.0) < 1e-6
    assert alerts.items == []  # one damaged frame is no reason to wake anyone


def test_damaged_frames_that_keep_coming_raise_one_alert(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 60)
    damage_frames(video, [10, 11, 30, 45])
    slot, m, alerts = FrameSlot(), PipelineMetrics(), Alerts()
    cap = CaptureThread(CameraSettings(source=str(video), realtime=False), slot, m, alerts).start()
    frames = consume(slot, per_frame_s=0)
    cap.join(5)
    assert len(frames) == 56 and m.undecodable_frames == 4
    assert [k for k, _ in alerts.items] == ["frames_damaged"]  # at the third, then quiet
    assert "3 damaged frames" in alerts.items[0][1]


def test_a_belt_video_with_a_damaged_frame_reports_every_item(tmp_path: Path, tiny_classifier) -> None:
    from daemon_fixtures import belt_video

    video = belt_video(tmp_path / "belt.avi", 4)
    damaged = video.n_frames // 2
    damage_frames(video.path, [damaged])
    settings = make_settings(video, serial_port=None, camera={"realtime": False})
    p = Pipeline(settings, classifier=tiny_classifier).start()
    assert p.wait_source_done(30)
    summary = p.stop()
    assert summary.frames_processed == video.n_frames - 1
    assert summary.bad_frames == 1
    assert summary.items == 4
