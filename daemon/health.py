"""Watchdog: pings systemd only while capture and inference are really making progress."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from daemon.metrics import PipelineMetrics
from daemon.notify import SystemdNotifier

log = structlog.get_logger(__name__)


class HealthMonitor:
    """Every ``interval_s``: WATCHDOG=1 if frames were captured and processed since the last check.

    A stalled camera or worker therefore stops the pings and systemd restarts the
    service (WatchdogSec), instead of a blind timer keeping a dead pipeline alive.
    """

    def __init__(
        self,
        metrics: PipelineMetrics,
        notifier: SystemdNotifier,
        interval_s: float,
        on_alert: Callable[[str, str], None],
        status: Callable[[], str],
    ) -> None:
        self._m = metrics
        self._notifier = notifier
        self._interval_s = interval_s
        self._on_alert = on_alert
        self._status = status
        self._last = (metrics.captured.total, metrics.processed.total)
        self._stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> HealthMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def check(self) -> bool:
        """One health check; returns True (and pings the watchdog) when the pipeline progressed."""
        now = (self._m.captured.total, self._m.processed.total)
        healthy = now[0] > self._last[0] and now[1] > self._last[1]
        what = "capture" if now[0] <= self._last[0] else "processing"
        self._last = now
        if healthy:
            self._notifier.watchdog()
            self._notifier.status(self._status())
            if self._stalled:
                self._stalled = False
                self._on_alert("pipeline_recovered", "capture and inference are progressing again")
        elif not self._stalled:
            self._stalled = True
            self._notifier.status(f"stalled: no {what} progress")
            self._on_alert("pipeline_stalled", f"no {what} progress in {self._interval_s:.1f} s")
        return healthy

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check()
