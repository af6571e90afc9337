"""Counters and latency windows shared by the pipeline threads, summarised for stats events."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np


class LatencyWindow:
    """The last ``size`` samples (seconds) of one latency; percentiles in milliseconds."""

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(seconds)

    def percentiles_ms(self, *qs: float) -> list[float | None]:
        with self._lock:
            data = np.fromiter(self._samples, dtype=np.float64, count=len(self._samples))
        if data.size == 0:
            return [None for _ in qs]
        return [round(float(v) * 1000.0, 3) for v in np.percentile(data, qs)]

    def __len__(self) -> int:
        return len(self._samples)


class RateMeter:
    """Events per second over the time since the previous ``rate()`` call."""

    def __init__(self) -> None:
        self.total = 0
        self._last_total = 0
        self._last_t = time.monotonic()

    def tick(self, n: int = 1) -> None:
        self.total += n

    def rate(self) -> float:
        now = time.monotonic()
        dt = now - self._last_t
        r = (self.total - self._last_total) / dt if dt > 0 else 0.0
        self._last_total, self._last_t = self.total, now
        return round(r, 2)


@dataclass
class PipelineMetrics:
    """Everything the stats topic and the run summary report. Each counter has one writer thread."""

    started: float = field(default_factory=time.monotonic)
    first_frame: float | None = None  # capture time of the first/last processed frame: the active window
    last_frame: float | None = None
    captured: RateMeter = field(default_factory=RateMeter)
    processed: RateMeter = field(default_factory=RateMeter)
    dropped_frames: int = 0
    bad_frames: int = 0  # rejected by the worker (odd size, wrong type, processing error)
    undecodable_frames: int = 0  # counted by the capture thread (e.g. a corrupt image file)
    camera_failures: int = 0
    lost_tracks: int = 0  # tracks that vanished before a decision (an item taken off upstream)
    merged_tracks: int = 0  # tracks that turned out to be pieces of another item (split by the detector)
    items: int = 0
    sorted: int = 0
    per_class: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    actuations_ok: int = 0
    actuation_errors: Counter[str] = field(default_factory=Counter)
    inference: LatencyWindow = field(default_factory=LatencyWindow)
    decision: LatencyWindow = field(default_factory=LatencyWindow)  # capture -> decision
    fire_error: LatencyWindow = field(default_factory=LatencyWindow)  # |sent - due|
    frame_processing: LatencyWindow = field(default_factory=LatencyWindow)
