"""Stopping with items on the belt: every scheduled gate command is fired or reported, none is lost.

A SIGTERM makes `wastesort run` call Pipeline.stop(); these tests call it directly at a moment
when gate commands are waiting in the scheduler, against the simulated controller on a real pty.
"""

from __future__ import annotations

import time
from pathlib import Path

from daemon_fixtures import belt_video, make_settings, sim, tiny_classifier, tiny_model_path, wait_for  # noqa: F401

from daemon.actuation import ActuationResult
from daemon.events import ItemEvent
from daemon.pipeline import Pipeline
from daemon.sim_controller import SimController


def started_with_items_waiting(tmp_path: Path, sim: SimController, classifier) -> Pipeline:
    video = belt_video(tmp_path / "belt.avi", 12)  # ~6 s of belt in real time: stopped long before its end
    p = Pipeline(make_settings(video, sim.link), classifier=classifier).start(serial_wait_s=5)
    assert wait_for(lambda: len(p.scheduler.pending_requests()) >= 2, 20), "no gate commands waiting"
    return p


def one_result_per_item(items: list[ItemEvent], results: list[ActuationResult]) -> dict[int, ActuationResult]:
    by_item: dict[int, list[ActuationResult]] = {}
    for r in results:
        by_item.setdefault(r.request.item_id, []).append(r)
    assert sorted(by_item) == sorted(e.id for e in items)  # every decided item has an outcome ...
    assert all(len(rs) == 1 for rs in by_item.values())  # ... and exactly one
    return {i: rs[0] for i, rs in by_item.items()}


def test_stop_drains_the_scheduled_gate_commands(tmp_path: Path, sim: SimController, tiny_classifier) -> None:
    p = started_with_items_waiting(tmp_path, sim, tiny_classifier)
    waiting = p.scheduler.pending_requests()
    t_stop = time.monotonic()
    summary = p.stop()
    outcome = one_result_per_item(list(p.items), list(p.actuations))
    assert all(outcome[r.item_id].error is None for r in waiting)  # fired after the stop, at their due time
    assert summary.actuation_errors == {} and summary.actuations_ok == len(p.items)
    assert sum(f.t_monotonic >= t_stop for f in sim.fires) >= len(waiting)  # the controller really got them
    assert len(sim.fires) == len(p.items)


def test_a_drain_cut_short_reports_the_rest_as_shutdown(tmp_path: Path, sim: SimController, tiny_classifier) -> None:
    p = started_with_items_waiting(tmp_path, sim, tiny_classifier)
    waiting = p.scheduler.pending_requests()
    summary = p.stop(drain_timeout_s=0.0)
    outcome = one_result_per_item(list(p.items), list(p.actuations))
    assert waiting and all(outcome[r.item_id].error == "shutdown" for r in waiting)
    assert summary.actuation_errors.get("shutdown", 0) >= len(waiting)
    assert len(sim.fires) == summary.actuations_ok  # nothing was sent for the reported ones
