"""Decides when a recurring problem deserves an alert: one damaged frame is noise, a run of them is not."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RepeatAlarm:
    """``hit()`` returns True when ``threshold`` hits fell within ``window_s``, at most once per ``quiet_s``."""

    threshold: int = 3
    window_s: float = 10.0
    quiet_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    total: int = 0
    _hits: deque[float] = field(default_factory=deque)
    _last_alarm: float = -1e18

    def hit(self) -> bool:
        now = self.clock()
        self.total += 1
        self._hits.append(now)
        while self._hits and self._hits[0] < now - self.window_s:
            self._hits.popleft()
        if len(self._hits) >= self.threshold and now - self._last_alarm >= self.quiet_s:
            self._last_alarm = now
            return True
        return False
