"""FrameProcessor: one frame in, decisions and gate commands out (rotation, timing, bad frames)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from daemon_fixtures import make_settings

from daemon.capture import Frame
from daemon.classify import ItemClassifier
from daemon.conveyor_sim import belt_background
from daemon.events import WallClock
from daemon.metrics import PipelineMetrics
from daemon.schedule import firing_time
from daemon.settings import TrackSettings
from daemon.worker import FrameProcessor
from model import Prediction

SPEED = 400.0  # px/s = mm/s at 1 px/mm
FPS = 30.0


class AlwaysGlass:
    class_names = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        self.batches.append(len(images))
        return [Prediction("glass", 0.9, {c: 0.02 for c in self.class_names} | {"glass": 0.9}, 0.0) for _ in images]


def processor(**sections: Any) -> tuple[FrameProcessor, AlwaysGlass, list[tuple[str, str]]]:
    settings = make_settings("0", serial_port=None, **sections)  # frames are handed in: no source is opened
    clf = AlwaysGlass()
    alerts: list[tuple[str, str]] = []
    ic = ItemClassifier(settings.classify, clf, settings.class_to_gate, settings.reject_gate)
    fp = FrameProcessor(settings, ic, PipelineMetrics(), "run", WallClock(), lambda k, m: alerts.append((k, m)))
    return fp, clf, alerts


def belt_frame(k: int, boxes: list[tuple[float, int]], vertical: bool = False) -> np.ndarray:
    """640x240 belt (or 240x640 when vertical) with 60x60 items whose leading coordinate is x0 + SPEED*t."""
    img = belt_background(640, 240, seed=2).copy()
    for x0, y in boxes:
        left = round(x0 + SPEED * k / FPS)
        a, b = max(0, left), min(640, left + 60)
        if a < b:
            img[y : y + 60, a:b] = (230, 220, 210)
    return np.ascontiguousarray(np.rot90(img, k=-1)) if vertical else img  # vertical: items move down


def run(fp: FrameProcessor, frames: list[np.ndarray], t0: float = 100.0) -> list[Any]:
    out = []
    for k, img in enumerate(frames):
        out += fp.process(Frame(k, t0 + k / FPS, img))
    return out


def test_due_time_follows_the_firing_formula() -> None:
    fp, clf, _ = processor()
    frames = [belt_frame(k, [(-80, 90)]) for k in range(40)]
    out = run(fp, frames)
    assert len(out) == 1 and clf.batches == [1]
    event, request = out[0]
    assert (event.label, event.gate, request.gate) == ("glass", 2, 2)
    expected = firing_time(event.t_capture, event.position_mm, 760.0, SPEED, 10.0)
    assert request.due == pytest.approx(expected, abs=1e-5)
    # The decision is taken on the first frame where the item is whole, seen whole before, and clear of
    # the entry edge by track.entry_clearance_px, at its true position.
    k = event.frame
    assert event.position_mm == pytest.approx(-80 + SPEED * k / FPS + 30, abs=2.5)
    clearance = TrackSettings().entry_clearance_px
    assert clearance - 1 <= -80 + SPEED * k / FPS <= clearance + SPEED / FPS + 1


def test_items_in_the_same_frame_are_classified_in_one_batch() -> None:
    fp, clf, _ = processor()
    frames = [belt_frame(k, [(-80, 20), (-80, 150)]) for k in range(40)]
    out = run(fp, frames)
    assert len(out) == 2 and clf.batches == [2]
    assert out[0][0].id != out[1][0].id


@pytest.mark.parametrize("vertical, rotate", [(False, 0), (True, 270)])
def test_rotation_makes_any_belt_direction_work(vertical: bool, rotate: int) -> None:
    region = [0, 0, 240, 640] if vertical else [0, 0, 640, 240]
    fp, _, _ = processor(belt={"region": region, "rotate": rotate, "speed_mm_s": SPEED, "px_per_mm": 1.0})
    out = run(fp, [belt_frame(k, [(-80, 90)], vertical) for k in range(60)])
    assert len(out) == 1
    assert 30 < out[0][0].position_mm < 80  # measured along the belt, from its upstream edge


def test_bad_frames_are_skipped_and_counted() -> None:
    fp, _, alerts = processor()
    good = belt_frame(0, [])
    assert fp.process(Frame(0, 1.0, good)) == []
    assert fp.process(Frame(1, 1.1, good[:, :, 0].copy())) == []  # grey
    assert fp.process(Frame(2, 1.2, good.astype(np.float32))) == []  # wrong dtype
    assert fp.process(Frame(3, 1.3, np.zeros((300, 700, 3), np.uint8))) == []  # size changed
    assert fp.process(Frame(4, 1.4, np.zeros((100, 100, 3), np.uint8))) == []  # region does not fit
    assert fp.metrics.bad_frames == 4
    assert [k for k, _ in alerts] == ["region_outside_frame"]


def test_servo_gate_commands_carry_the_bin_angle() -> None:
    gates = {"1": {"distance_mm": 700.0}, "3": {"distance_mm": 820.0}, "4": {"distance_mm": 880.0},
             "2": {"distance_mm": 760.0, "lead_time_ms": 10.0, "kind": "servo", "rest_angle": 90,
                   "bin_angles": {"glass": 30, "metal": 150}}}
    fp, _, _ = processor(gates=gates)
    out = run(fp, [belt_frame(k, [(-80, 90)]) for k in range(40)])
    assert len(out) == 1
    event, request = out[0]
    assert (event.label, request.gate, request.angle) == ("glass", 2, 30)  # the glass bin of servo gate 2
    fp, _, _ = processor()  # solenoid gates: plain FIRE
    assert run(fp, [belt_frame(k, [(-80, 90)]) for k in range(40)])[0][1].angle is None
