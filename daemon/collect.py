"""Keeps the crops the line classified (JPEG + JSON sidecar per item) for review and fine-tuning.

Why a thread and a bounded queue: JPEG encoding and disk writes take milliseconds and a
disk can stall; the worker must never wait for them. A full queue drops the item and
counts it, so the stats say how much was not kept. The directory is capped: beyond
``max_disk_mb`` the oldest items go first, so a forgotten collection cannot fill the disk.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from daemon.events import ItemEvent
from daemon.settings import CollectSettings

log = structlog.get_logger(__name__)

SIDECAR_SUFFIX = ".json"


class CollectError(ValueError):
    """The collection directory cannot be used (said plainly at start-up)."""


@dataclass(frozen=True)
class _Job:
    event: ItemEvent
    crops: list[np.ndarray]
    model_checksum: str


@dataclass
class _Stored:
    """One item on disk: its sidecar and crops, and their size (for the disk cap)."""

    sidecar: Path
    files: list[Path]
    nbytes: int


def item_stem(line_id: str, run: str, item_id: int) -> str:
    return f"{line_id}-{run}-{item_id:06d}"


class CropCollector:
    """Decides which items to keep (policy) and writes them on its own thread."""

    def __init__(self, settings: CollectSettings, line_id: str, on_alert: Callable[[str, str], None] | None = None) -> None:
        self.s = settings
        self.line_id = line_id
        self._on_alert = on_alert
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=settings.queue_size)
        self._thread = threading.Thread(target=self._run, name="collect", daemon=True)
        self._stored: deque[_Stored] = deque()
        self._usage = 0
        self._seen = 0
        self._error_alerted = False
        self.saved = 0
        self.dropped = 0  # queue full: the writer could not keep up
        self.errors = 0  # write failures (full disk, permissions)
        self.rotated = 0  # old items deleted to stay under the cap

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> CropCollector:
        """Check the directory is writable and index what is there, then start the writer."""
        d = self.s.directory
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / ".write-test"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as e:
            raise CollectError(f"collect.directory {d} is not writable: {e.strerror or e}") from None
        self._index_existing()
        self._thread.start()
        log.info("collect_started", directory=str(d), policy=self.s.policy, items=len(self._stored),
                 disk_mb=round(self._usage / 1e6, 1), max_disk_mb=self.s.max_disk_mb)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (up to ``timeout_s``), then end the thread."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        return {"collect_saved": self.saved, "collect_dropped": self.dropped, "collect_errors": self.errors,
                "collect_disk_mb": round(self._usage / 1e6, 2)}

    # --- worker side (never blocks) -------------------------------------------------------------
    def wants(self, event: ItemEvent) -> bool:
        """The policy; called once per decided item, in order (one_in_n counts them)."""
        self._seen += 1
        p = self.s.policy
        if p == "every":
            return True
        if p == "low_confidence":
            return event.confidence < self.s.low_confidence_below or event.reject_reason == "low_confidence"
        if p == "unknown":
            return event.reject_reason == "unknown"
        return (self._seen - 1) % self.s.one_in_n == 0

    def submit(self, event: ItemEvent, crops: list[np.ndarray], model_checksum: str) -> bool:
        """Queue the item if the policy keeps it; True if queued. A full queue counts a drop."""
        if not crops or not self.wants(event):
            return False
        try:
            self._queue.put_nowait(_Job(event, [np.ascontiguousarray(c).copy() for c in crops], model_checksum))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    # --- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._write(job)
            except Exception as e:  # never kill the thread: the next item may well succeed
                self._failed(f"{type(e).__name__}: {e}")

    def _write(self, job: _Job) -> None:
        stem = item_stem(self.line_id, job.event.run, job.event.id)
        day = dt.datetime.fromtimestamp(job.event.captured_at or 0, dt.timezone.utc)
        folder = self.s.directory / day.strftime("%Y-%m-%d")
        blobs = []
        for crop in job.crops:
            ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, self.s.jpeg_quality])
            if not ok:
                raise ValueError(f"cannot encode the crop of item {job.event.id} as JPEG")
            blobs.append(buf.tobytes())
        names = [f"{stem}-{k}.jpg" for k in range(len(blobs))]
        sidecar = json.dumps(self._sidecar(job, day, names), indent=1).encode()
        need = sum(map(len, blobs)) + len(sidecar)
        self._make_room(need)
        for attempt in (1, 2):
            try:
                stored = self._write_files(folder, stem, names, blobs, sidecar)
                break
            except OSError as e:
                if e.errno != errno.ENOSPC or attempt == 2 or not self._stored:
                    self._failed(f"cannot write {folder / stem}: {e.strerror or e}")
                    return
                self._delete_oldest(max(need, self._usage // 10))  # full disk: free a tenth and retry
        self._stored.append(stored)
        self._usage += stored.nbytes
        self.saved += 1

    def _sidecar(self, job: _Job, day: dt.datetime, names: list[str]) -> dict[str, Any]:
        e = job.event
        return {
            "item_id": e.id, "run": e.run, "line_id": self.line_id,
            "time": day.isoformat(timespec="milliseconds"), "captured_at": e.captured_at,
            "frame": e.frame, "position_mm": e.position_mm,
            "label": e.label, "confidence": e.confidence, "unknown": e.unknown, "scores": e.scores,
            "decision": e.decision, "reject_reason": e.reject_reason, "gate": e.gate,
            "model_checksum": job.model_checksum, "policy": self.s.policy, "crops": names,
        }

    @staticmethod
    def _write_files(folder: Path, stem: str, names: list[str], blobs: list[bytes], sidecar: bytes) -> _Stored:
        """Crops first, the sidecar last (via rename): a sidecar on disk means a complete item."""
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            for name, blob in zip(names, blobs):
                path = folder / name
                written.append(path)  # before writing: a half-written file is removed too
                path.write_bytes(blob)
            tmp = folder / f".{stem}{SIDECAR_SUFFIX}.tmp"
            written.append(tmp)
            tmp.write_bytes(sidecar)
            final = folder / f"{stem}{SIDECAR_SUFFIX}"
            tmp.replace(final)
        except OSError:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        return _Stored(final, written[:-1], sum(map(len, blobs)) + len(sidecar))

    def _make_room(self, need: int) -> None:
        cap = int(self.s.max_disk_mb * 1e6)
        if self._usage + need > cap:
            self._delete_oldest(self._usage + need - cap)

    def _delete_oldest(self, nbytes: int) -> None:
        freed = 0
        while self._stored and freed < nbytes:
            old = self._stored.popleft()
            for p in (old.sidecar, *old.files):  # the sidecar first: no half item is ever listed
                p.unlink(missing_ok=True)
            freed += old.nbytes
            self._usage -= old.nbytes
            self.rotated += 1
            try:
                old.sidecar.parent.rmdir()  # the day folder, once empty
            except OSError:
                pass

    def _index_existing(self) -> None:
        """Items a previous run left, oldest first, so that the cap counts them too."""
        found = []
        for sidecar in self.s.directory.glob(f"*/*{SIDECAR_SUFFIX}"):
            stem = sidecar.name.removesuffix(SIDECAR_SUFFIX)
            files = sorted(sidecar.parent.glob(f"{stem}-*.jpg"))
            try:
                size = sidecar.stat().st_size + sum(f.stat().st_size for f in files)
                found.append((sidecar.stat().st_mtime, _Stored(sidecar, files, size)))
            except OSError:
                continue
        for _, stored in sorted(found, key=lambda t: (t[0], str(t[1].sidecar))):
            self._stored.append(stored)
            self._usage += stored.nbytes

    def _failed(self, message: str) -> None:
        self.errors += 1
        log.warning("collect_write_failed", error=message, errors=self.errors)
        if self._on_alert is not None and not self._error_alerted:  # one alert, not one per item
            self._error_alerted = True
            self._on_alert("collect_failed", message)
