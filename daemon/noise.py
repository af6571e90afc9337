"""Rate-limited reporting of a recurring fault (malformed serial lines): count all, log a few, alert once.

A noisy cable can deliver hundreds of bad lines a minute; one warning per line floods the
journal and hides everything else, while a single counter alone is noticed by nobody.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class NoiseVerdict:
    """What to do about one occurrence."""

    log: bool  # write a log line now
    suppressed: int  # occurrences not logged since the previous log line
    alert: bool  # raise the alert now (once per noisy spell)
    recent: int  # occurrences within the window (capped at the alert threshold)


class NoiseWatch:
    """Logs at most one line per ``log_interval_s``; alerts once when ``alert_count`` occurrences fall
    within ``window_s``, and again only after a quiet ``window_s`` ended that spell."""

    def __init__(self, alert_count: int = 20, window_s: float = 10.0, log_interval_s: float = 10.0) -> None:
        self.alert_count = alert_count
        self.window_s = window_s
        self.log_interval_s = log_interval_s
        self._times: deque[float] = deque(maxlen=alert_count)
        self._last_log = float("-inf")
        self._suppressed = 0
        self._alerted = False

    def record(self, now: float) -> NoiseVerdict:
        if self._times and now - self._times[-1] > self.window_s:
            self._alerted = False  # a quiet window: the next spell gets its own alert
        self._times.append(now)
        while now - self._times[0] > self.window_s:
            self._times.popleft()
        recent = len(self._times)
        alert = not self._alerted and recent >= self.alert_count
        self._alerted = self._alerted or alert
        if now - self._last_log >= self.log_interval_s:
            verdict = NoiseVerdict(True, self._suppressed, alert, recent)
            self._last_log, self._suppressed = now, 0
            return verdict
        self._suppressed += 1
        return NoiseVerdict(False, self._suppressed, alert, recent)
