"""Scheduler: firing-time arithmetic, on-time firing from one thread, missed deadlines never fired."""

from __future__ import annotations

import threading
import time

import pytest

from daemon.actuation import ActuationRequest, ActuationResult
from daemon.schedule import ActuationScheduler, firing_time


def test_firing_time_formula() -> None:
    # Item at 100 mm seen at t=10 s; gate at 700 mm; belt 300 mm/s; actuator needs 20 ms.
    assert firing_time(10.0, 100.0, 700.0, 300.0, 20.0) == pytest.approx(10.0 + 2.0 - 0.020)
    assert firing_time(5.0, 0.0, 400.0, 400.0, 0.0) == pytest.approx(6.0)


class Recorder:
    def __init__(self) -> None:
        self.fired: list[tuple[ActuationRequest, float]] = []
        self.missed: list[ActuationResult] = []
        self.event = threading.Event()

    def fire(self, r: ActuationRequest) -> None:
        self.fired.append((r, time.monotonic()))
        self.event.set()

    def miss(self, r: ActuationResult) -> None:
        self.missed.append(r)


def test_requests_fire_in_due_order_close_to_their_due_time() -> None:
    rec = Recorder()
    sched = ActuationScheduler(rec.fire, rec.miss, late_tolerance_s=0.02).start()
    now = time.monotonic()
    dues = [0.30, 0.10, 0.20, 0.15, 0.25]
    for i, d in enumerate(dues):
        assert sched.schedule(ActuationRequest(i, 1, 50, now + d))
    time.sleep(0.45)
    sched.stop(drain_timeout_s=0)
    assert [r.item_id for r, _ in rec.fired] == [1, 3, 2, 4, 0]
    errors_ms = [(t - r.due) * 1000 for r, t in rec.fired]
    # Never early; typically well under 5 ms late, and never more than 30 ms even on a loaded 2-core machine.
    assert all(-0.5 <= e <= 30 for e in errors_ms), errors_ms
    assert sorted(errors_ms)[len(errors_ms) // 2] <= 5, errors_ms
    assert rec.missed == []


def test_past_deadline_is_reported_not_fired() -> None:
    rec = Recorder()
    sched = ActuationScheduler(rec.fire, rec.miss, late_tolerance_s=0.005).start()
    ok = sched.schedule(ActuationRequest(7, 2, 50, time.monotonic() - 0.1))
    sched.stop(drain_timeout_s=0)
    assert ok is False
    assert rec.fired == []
    assert [(m.request.item_id, m.error) for m in rec.missed] == [(7, "deadline_missed")]


def test_request_that_comes_due_while_the_thread_is_blocked_is_missed() -> None:
    """If firing one request blocks past the next one's deadline, the next is reported, not fired late."""
    rec = Recorder()

    def slow_fire(r: ActuationRequest) -> None:
        rec.fire(r)
        if r.item_id == 1:
            time.sleep(0.15)

    sched = ActuationScheduler(slow_fire, rec.miss, late_tolerance_s=0.01).start()
    now = time.monotonic()
    sched.schedule(ActuationRequest(1, 1, 50, now + 0.05))
    sched.schedule(ActuationRequest(2, 1, 50, now + 0.08))
    sched.schedule(ActuationRequest(3, 1, 50, now + 0.40))
    time.sleep(0.5)
    sched.stop(drain_timeout_s=0)
    assert [r.item_id for r, _ in rec.fired] == [1, 3]
    assert [(m.request.item_id, m.error) for m in rec.missed] == [(2, "deadline_missed")]


def test_stop_drains_due_requests_and_reports_the_rest() -> None:
    rec = Recorder()
    sched = ActuationScheduler(rec.fire, rec.miss).start()
    now = time.monotonic()
    sched.schedule(ActuationRequest(1, 1, 50, now + 0.1))
    sched.schedule(ActuationRequest(2, 1, 50, now + 5.0))
    sched.stop(drain_timeout_s=0.3)
    assert [r.item_id for r, _ in rec.fired] == [1]
    assert [(m.request.item_id, m.error) for m in rec.missed] == [(2, "shutdown")]
    assert sched.schedule(ActuationRequest(3, 1, 50, time.monotonic() + 1)) is False


def test_many_items_use_one_thread() -> None:
    rec = Recorder()
    before = threading.active_count()
    sched = ActuationScheduler(rec.fire, rec.miss).start()
    now = time.monotonic()
    for i in range(200):
        sched.schedule(ActuationRequest(i, 1, 50, now + 0.05 + (i % 10) * 0.005))
    assert threading.active_count() == before + 1
    time.sleep(0.25)
    sched.stop(drain_timeout_s=0)
    assert len(rec.fired) + len(rec.missed) == 200
    assert len(rec.fired) >= 190
