"""Frame capture on its own thread with a one-slot hand-off to the worker.

Live sources (cameras, streams) never queue: a frame the worker has not taken
yet is replaced by the newer one and counted as dropped. Files and image
folders either play in real time (paced at their fps, dropping like a camera)
or as fast as possible (no drops: the capture waits for the worker).

A video file's read() fails both at its end and on a frame it cannot decode.
The two are told apart by the frame number against the file's frame count: a
damaged frame is skipped (the next read moves past it), counted in
``bad_frames``, and its number stays used, so belt time keeps following the
video. Damaged frames that keep coming raise a ``frames_damaged`` alert.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import structlog

from daemon.camera_controls import apply_controls, configured_controls, describe_ignored
from daemon.metrics import PipelineMetrics
from daemon.repeat_alarm import RepeatAlarm
from daemon.settings import CameraSettings, source_kind

log = structlog.get_logger(__name__)

HEALTHY_SESSION_FRAMES = 30  # a live source that delivered this many frames before failing resets the back-off
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MAX_DAMAGED_IN_A_ROW = 25  # a file that fails this many frames in a row is unreadable from there on


@dataclass(frozen=True)
class Frame:
    """One captured image; ``t_capture`` is time.monotonic() when it was read.

    ``t_belt`` is the time the belt-motion model uses: the capture time for a live source, the
    frame's own video time (start + index / fps) for a file or folder. A file's content moves with
    its video time whether it is played in real time or as fast as possible; the moment a starved
    reader got to a frame says nothing about it (stamps bunched after a stall broke tracking).
    """

    index: int
    t_capture: float
    image: np.ndarray
    t_belt: float = -1.0

    def __post_init__(self) -> None:
        if self.t_belt < 0:
            object.__setattr__(self, "t_belt", self.t_capture)


class FrameSlot:
    """Holds at most one frame. put() replaces (and counts a drop) or waits, get() takes."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame, wait: bool) -> bool:
        """Offer ``frame``; return True if an untaken frame was dropped to make room."""
        with self._cond:
            if wait:
                while self._frame is not None and not self._closed:
                    self._cond.wait()
            dropped = self._frame is not None
            self._frame = frame
            self._cond.notify_all()
            return dropped

    def get(self, timeout_s: float) -> Frame | None:
        """The latest frame, or None on timeout or when closed and empty."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout_s)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed and self._frame is None


def classify_source(source: str) -> str:
    """'camera' (index or device), 'stream' (URL), 'file' (video) or 'folder' (images)."""
    return source_kind(source)


class FrameReader(Protocol):
    """What the capture loop needs from a source: cv2.VideoCapture or an image folder."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


class _ImageFolder:
    """A VideoCapture look-alike over a sorted folder of images."""

    def __init__(self, folder: Path, fps: float) -> None:
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self._i = 0
        self.fps = fps

    def isOpened(self) -> bool:  # noqa: N802 (mirrors cv2.VideoCapture)
        return bool(self._files)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._i >= len(self._files):
            return False, None
        path = self._files[self._i]
        self._i += 1
        return True, cv2.imread(str(path), cv2.IMREAD_COLOR)

    def release(self) -> None:
        self._files = []


class CaptureThread:
    """Reads frames from ``settings.source`` into ``slot`` until the source ends or stop() is called."""

    def __init__(
        self,
        settings: CameraSettings,
        slot: FrameSlot,
        metrics: PipelineMetrics,
        on_alert: Callable[[str, str], None],
    ) -> None:
        self._s = settings
        self._slot = slot
        self._metrics = metrics
        self._on_alert = on_alert
        self._kind = classify_source(settings.source)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self.opened = threading.Event()
        self.failed: str | None = None  # set when the source was given up on
        self._damaged = RepeatAlarm()

    @property
    def is_live(self) -> bool:
        return self._kind in ("camera", "stream")

    def start(self) -> CaptureThread:
        if self._kind != "camera" and configured_controls(self._s):
            log.info("camera_controls_not_applied", source=self._s.source, kind=self._kind,
                     why="exposure, white balance and resolution are only set on a live camera")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._slot.close()
        self._thread.join(timeout=3)

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    def _open(self) -> tuple[FrameReader, float]:
        src = self._s.source
        if self._kind == "folder":
            return _ImageFolder(Path(src), self._s.folder_fps), self._s.folder_fps
        if self._kind == "file" and not Path(src).is_file():
            raise OSError(f"video file not found: {src}")
        vc = cv2.VideoCapture(int(src) if src.isdigit() else src)
        if not vc.isOpened():
            vc.release()
            raise OSError(f"cannot open camera source {src!r}")
        if self.is_live:
            vc.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver from queueing stale frames (if supported)
        if self._kind == "camera":
            self._apply_controls(vc)
        fps = vc.get(cv2.CAP_PROP_FPS)
        return vc, fps if 1 <= fps <= 1000 else 30.0

    def _apply_controls(self, cap: cv2.VideoCapture) -> None:
        """Re-apply the configured [camera] controls: a camera that lost power is back on auto exposure."""
        controls = configured_controls(self._s)
        if not controls:
            return
        reports = apply_controls(cap, controls)
        ignored = describe_ignored(reports)
        if ignored is None:
            log.info("camera_controls_applied", source=self._s.source, controls=controls)
            return
        log.warning("camera_controls_ignored", source=self._s.source,
                    ignored=[r.name for r in reports if not r.applied], detail=ignored)
        self._on_alert("camera_controls_ignored", f"source {self._s.source!r}: {ignored}")

    def _run(self) -> None:
        try:
            self._capture_loop()
        except Exception as e:  # never die silently: report and end the stream
            log.exception("capture_crashed")
            self.failed = f"capture crashed: {e}"
            self._on_alert("camera_lost", self.failed)
        finally:
            self._slot.close()

    def _capture_loop(self) -> None:
        """Open, read, and on failure reopen with exponential back-off, alerting once per loss and recovery."""
        delay = self._s.reconnect_delay_s
        failures = 0  # consecutive failed opens
        lost = False  # an alert went out and no recovery was reported yet
        index = 0
        while not self._stop.is_set():
            try:
                cap, fps = self._open()
            except OSError as e:
                failures += 1
                lost = True
                self._metrics.camera_failures += 1
                self._on_alert("camera_lost", f"{e}; retrying in {delay:.1f} s")
                if self._s.max_failures and failures >= self._s.max_failures:
                    self.failed = str(e)
                    return
                self._stop.wait(delay)
                delay = min(delay * 2, self._s.reconnect_max_delay_s)
                continue
            if lost:
                self._on_alert("camera_restored", f"source {self._s.source!r} delivers again")
                lost = False
            failures = 0
            self.opened.set()
            log.info("camera_opened", source=self._s.source, kind=self._kind, fps=fps)
            ended_normally, next_index = self._read_frames(cap, fps, index_start=index)
            cap.release()
            if ended_normally:
                return
            if next_index - index >= HEALTHY_SESSION_FRAMES:
                delay = self._s.reconnect_delay_s  # it worked for a while: start the back-off afresh
            index = next_index
            lost = True
            self._metrics.camera_failures += 1
            self._on_alert("camera_lost", f"source {self._s.source!r} stopped delivering frames; reopening")
            self._stop.wait(delay)
            delay = min(delay * 2, self._s.reconnect_max_delay_s)

    def _read_frames(self, cap: FrameReader, fps: float, index_start: int) -> tuple[bool, int]:
        """Read until stop or the end of a file (True) or a live source failing (False); also the next index."""
        pace = self._s.realtime and not self.is_live
        wait_for_worker = not self._s.realtime and not self.is_live
        t0 = time.monotonic()
        index = index_start
        while not self._stop.is_set():
            if pace:
                delay = t0 + (index - index_start) / fps - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
            ok, image = cap.read()
            if not ok and self._kind == "file":
                ok, image, index = self._skip_damaged(cap, index)
            t_capture = time.monotonic()
            if not ok:
                return not self.is_live, index
            index += 1
            if image is None or image.size == 0:
                self._count_damaged(index - 1)
                continue
            self._metrics.captured.tick()
            t_belt = t_capture if self.is_live else t0 + (index - 1 - index_start) / fps
            if self._slot.put(Frame(index - 1, t_capture, image, t_belt), wait=wait_for_worker):
                self._metrics.dropped_frames += 1
        return True, index

    def _skip_damaged(self, cap: FrameReader, index: int) -> tuple[bool, np.ndarray | None, int]:
        """After a failed read of frame ``index``: the next good frame and its index, or (False, None, index) at
        the end. A failed read before the frame count is a damaged frame: counted, and the next read moves past
        it (FFmpeg's demuxer has consumed it). OpenCV's own position is not used: it does not advance on a
        failed read, so a seek to it lands on the wrong frame (measured: the read after such a seek fails)."""
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if isinstance(cap, cv2.VideoCapture) else 0
        for _ in range(MAX_DAMAGED_IN_A_ROW):
            if count <= 0 or index >= count:
                return False, None, index  # the real end (or a file that does not know its length)
            self._count_damaged(index)
            index += 1
            ok, image = cap.read()
            if ok:
                return True, image, index
        self.failed = f"video {self._s.source!r} unreadable from frame {index} of {count}"
        self._on_alert("frames_damaged", self.failed)
        return False, None, index

    def _count_damaged(self, index: int) -> None:
        self._metrics.undecodable_frames += 1
        log.warning("frame_damaged", source=self._s.source, frame=index)
        if self._damaged.hit():
            self._on_alert("frames_damaged", f"source {self._s.source!r}: {self._damaged.total} damaged frames "
                                             f"skipped so far (latest: frame {index})")
