"""Model reload while the belt runs: a new file at the model path goes live without dropped
frames or lost fires, and is announced (retained) on MQTT; a bad file leaves the old model live."""

from __future__ import annotations

import pytest

from pathlib import Path

from daemon_fixtures import (  # noqa: F401 (pytest fixtures)
    Broker,
    Collector,
    belt_video,
    broker,
    collector,
    make_settings,
    sim,
    wait_for,
)

from daemon.events import ItemEvent
from daemon.model_reload import file_checksum, trained_on
from daemon.pipeline import Pipeline
from daemon.sim_controller import SimController
from model.testing import DEFAULT_CLASSES, make_tiny_checkpoint


# Real time on 2 shared cores while a reload exports and quantises a model beside the line: an
# unlucky scheduling slice can drop a frame or miss one gate deadline (seen about once in four
# runs on the CI-sized machine). The assertions stay exact; a failing run is repeated up to twice.
@pytest.mark.flaky(reruns=2)
def test_reload_swaps_the_model_mid_run(
    tmp_path: Path, broker: Broker, collector: Collector, sim: SimController
) -> None:
    live = make_tiny_checkpoint(tmp_path / "live.pt")
    first = file_checksum(live)
    n = 40  # ~17 s of belt: the reload's export child needs several seconds on a loaded machine (24 items were too few with training beside it)
    video = belt_video(tmp_path / "belt.avi", n)
    settings = make_settings(video, sim.link, model_path=live, broker=broker)
    items: list[ItemEvent] = []
    p = Pipeline(settings, on_item=items.append).start(serial_wait_s=5)
    try:
        assert wait_for(lambda: len(items) >= 2, 30)
        new = make_tiny_checkpoint(tmp_path / "new.pt", DEFAULT_CLASSES + ["textile"], seed=3)
        new.replace(live)  # what `export --install` does: an atomic rename
        second = file_checksum(live)
        assert p.reload_model()
        p.reloader.wait(60)
        reloaded_at = len(items)
        assert p.reloader.active.checksum == second and reloaded_at < n, "reload finished after the belt ended"
        assert p.wait_source_done(60)
    finally:
        summary = p.stop()
    assert summary.items == n and summary.dropped_frames == 0 and summary.actuations_ok == n
    assert "textile" not in items[0].scores and "textile" in items[-1].scores
    models = collector.on("model")
    assert [m["checksum"] for m in models] == [first, second]
    assert models[1]["reason"] == "reload" and models[1]["previous_checksum"] == first
    assert models[1]["classes"][-1] == "textile" and models[1]["trained_on"]["date"]
    assert collector.on("stats")[-1]["model_checksum"] == second
    retained = [r for t, _, r in collector.messages if t.endswith("/model")]
    assert retained and not any(retained)  # live delivery; the broker keeps the last one for late subscribers


def test_a_bad_file_keeps_the_old_model(tmp_path: Path) -> None:
    live = make_tiny_checkpoint(tmp_path / "live.pt")
    video = belt_video(tmp_path / "belt.avi", 3)
    settings = make_settings(video, None, model_path=live, camera={"realtime": False}, classify={"backend": "torch"})
    p = Pipeline(settings).start()
    try:
        checksum = p.reloader.active.checksum
        live.write_bytes(b"not a checkpoint")
        assert p.reload_model()
        p.reloader.wait(30)
        assert p.reloader.active.checksum == checksum and p.reloader.failures == 1
        assert p.alerts[-1]["kind"] == "model_reload_failed" and "still running" in p.alerts[-1]["message"]
        assert p.wait_source_done(30)
    finally:
        summary = p.stop()
    assert summary.items == 3


def test_the_model_topic_says_how_many_photos_the_accuracy_was_measured_on() -> None:
    """A final fit's val_accuracy comes from the demo's 24 held-out photos: an operator comparing
    models on the `model` topic must see that next to the figure."""
    meta = {"date": "2026-12-03", "val_accuracy": 0.833, "val_images": 24, "distill": {"epochs": 12}}
    assert trained_on(meta) == {"date": "2026-12-03", "val_accuracy": 0.833, "val_images": 24}
