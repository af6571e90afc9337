"""Fires actuation requests at their due time: one thread, a heap and a condition variable.

A request whose due time has already passed is never fired late: it is reported
as ``deadline_missed`` instead (a gate opening at the wrong moment sorts the
wrong item).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from daemon.actuation import ActuationRequest, ActuationResult


def firing_time(
    capture_time: float, position_mm: float, gate_distance_mm: float, speed_mm_s: float, lead_time_ms: float
) -> float:
    """When to fire a gate for an item seen at ``position_mm`` in a frame captured at ``capture_time``.

    Distances are measured along the belt from the same origin (the upstream edge
    of the belt region); the actuator's lead time is subtracted so that the flap
    is open when the item arrives.
    """
    return capture_time + (gate_distance_mm - position_mm) / speed_mm_s - lead_time_ms / 1000.0


class ActuationScheduler:
    """Calls ``fire(request)`` from its own thread when ``request.due`` comes."""

    def __init__(
        self,
        fire: Callable[[ActuationRequest], None],
        on_missed: Callable[[ActuationResult], None],
        late_tolerance_s: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fire = fire
        self._on_missed = on_missed
        self._late_tolerance_s = late_tolerance_s
        self._clock = clock
        self._heap: list[tuple[float, int, ActuationRequest]] = []
        self._tiebreak = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> ActuationScheduler:
        self._thread.start()
        return self

    def schedule(self, request: ActuationRequest) -> bool:
        """Queue ``request``; if its due time has already passed, report it missed and return False."""
        if request.due < self._clock() - self._late_tolerance_s:
            self._on_missed(ActuationResult(request, error="deadline_missed"))
            return False
        with self._cond:
            if self._stopping:
                self._on_missed(ActuationResult(request, error="shutdown"))
                return False
            heapq.heappush(self._heap, (request.due, next(self._tiebreak), request))
            self._cond.notify()
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def pending_requests(self) -> list[ActuationRequest]:
        """The requests waiting for their due time, earliest first (what a stop would have to drain)."""
        with self._cond:
            return [r for _, _, r in sorted(self._heap)]

    def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Fire everything already due within ``drain_timeout_s``; report the rest as ``shutdown``."""
        deadline = self._clock() + drain_timeout_s
        with self._cond:
            while self._heap and self._heap[0][0] <= deadline:
                self._cond.wait(timeout=0.05)
            self._stopping = True
            leftovers = [r for _, _, r in self._heap]
            self._heap.clear()
            self._cond.notify_all()
        for r in leftovers:
            self._on_missed(ActuationResult(r, error="shutdown"))
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait_s = self._heap[0][0] - self._clock()
                    if wait_s <= 0:
                        break
                    self._cond.wait(timeout=wait_s)
                if self._stopping:
                    return
                _, _, request = heapq.heappop(self._heap)
                self._cond.notify_all()  # wakes stop() waiting for the drain
            if self._clock() - request.due > self._late_tolerance_s:
                self._on_missed(ActuationResult(request, error="deadline_missed"))
            else:
                self._fire(request)
