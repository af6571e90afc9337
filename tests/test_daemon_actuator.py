"""Serial actuator against the controller simulator on a real pty: ACK, NAK, retry, unplug/replug, banner."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from daemon_fixtures import sim, wait_for  # noqa: F401 (pytest fixtures)

from daemon.actuation import ActuationRequest, ActuationResult
from daemon.actuator import SerialActuator
from daemon.settings import SerialSettings
from daemon.sim_controller import SimController


class Sink:
    def __init__(self) -> None:
        self.results: list[ActuationResult] = []
        self.links: list[tuple[bool, str]] = []
        self.lock = threading.Lock()

    def result(self, r: ActuationResult) -> None:
        with self.lock:
            self.results.append(r)

    def link(self, up: bool, detail: str) -> None:
        self.links.append((up, detail))


def make(port: Path, sink: Sink, **kw: object) -> SerialActuator:
    opts = {"reconnect_delay_s": 0.05, "reconnect_max_delay_s": 0.2, "heartbeat_s": 0.3, **kw}
    s = SerialSettings(port=str(port), **opts)
    return SerialActuator(s, gates_needed=4, on_result=sink.result, on_link=sink.link).start()


def req(item: int, gate: int) -> ActuationRequest:
    return ActuationRequest(item, gate, 60, time.monotonic())


def test_fire_is_acknowledged_and_reaches_the_gate(sim: SimController) -> None:
    sink = Sink()
    act = make(sim.link, sink)
    try:
        assert act.wait_connected(3)
        assert act.banner is not None and act.banner.n_gates == 4
        for i, gate in enumerate([1, 3, 2, 4]):
            act.fire(req(i, gate))
        assert wait_for(lambda: len(sink.results) == 4, 2)
        assert all(r.error is None and r.acked is not None and r.acked >= r.sent for r in sink.results)
        assert [f.gate for f in sim.fires] == [1, 3, 2, 4]
        assert [r.seq for r in sink.results] == [f.seq for f in sim.fires]
        assert all(f.duration_ms == 60 for f in sim.fires)
    finally:
        act.close()


def test_nak_is_reported_with_its_reason(tmp_path: Path) -> None:
    sim = SimController(tmp_path / "five", n_gates=5).start()  # 5 gates passes the handshake...
    sink = Sink()
    act = make(sim.link, sink)
    try:
        assert act.wait_connected(3)
        sim.n_gates = 3  # ...then the controller refuses gate 4
        act.fire(req(1, 4))
        assert wait_for(lambda: len(sink.results) == 1, 2)
        assert sink.results[0].error == "nak:bad_gate"
        assert sim.fires == []
    finally:
        act.close()
        sim.stop()


def test_lost_ack_is_retried_and_the_gate_fires_once(sim: SimController) -> None:
    sink = Sink()
    act = make(sim.link, sink, ack_timeout_ms=20, retries=2, max_late_ms=200)
    try:
        assert act.wait_connected(3)
        sim.drop_requests = 1  # the first FIRE is lost on the wire
        act.fire(req(1, 2))
        assert wait_for(lambda: len(sink.results) == 1, 2)
        r = sink.results[0]
        assert r.error is None and r.attempts == 2
        assert len(sim.fires) == 1
    finally:
        act.close()


def test_no_ack_gives_up_after_bounded_retries(sim: SimController) -> None:
    sink = Sink()
    act = make(sim.link, sink, ack_timeout_ms=20, retries=2, max_late_ms=500, heartbeat_s=5)
    try:
        assert act.wait_connected(3)
        sim.drop_requests = 10
        act.fire(req(1, 2))
        assert wait_for(lambda: len(sink.results) == 1, 2)
        assert sink.results[0].error == "ack_timeout"
        assert sink.results[0].attempts == 3  # first try + 2 retries
        assert sim.fires == []
    finally:
        act.close()


def test_never_resends_later_than_max_late(sim: SimController) -> None:
    sink = Sink()
    act = make(sim.link, sink, ack_timeout_ms=30, retries=5, max_late_ms=10, heartbeat_s=5)
    try:
        assert act.wait_connected(3)
        sim.drop_requests = 10
        act.fire(req(1, 2))
        assert wait_for(lambda: len(sink.results) == 1, 2)
        assert sink.results[0].error == "ack_timeout" and sink.results[0].attempts == 1
    finally:
        act.close()


def test_unplug_and_replug_reconnects_and_reports(tmp_path: Path) -> None:
    link = tmp_path / "by-id-gate"
    sim = SimController(link).start()
    sink = Sink()
    act = make(link, sink)
    try:
        assert act.wait_connected(3)
        sim.stop()  # USB adapter pulled: the pty and the by-id link disappear
        assert wait_for(lambda: not act.connected, 3)
        assert sink.links[-1][0] is False
        act.fire(req(1, 1))
        assert sink.results[-1].error == "serial_down"
        sim = SimController(link).start()  # plugged back in (a new /dev/pts behind the same link)
        assert act.wait_connected(5)
        assert sink.links[-1][0] is True and act.reconnects >= 1
        act.fire(req(2, 1))
        assert wait_for(lambda: sink.results[-1].request.item_id == 2 and sink.results[-1].acked is not None, 2)
        assert [f.gate for f in sim.fires] == [1]
    finally:
        act.close()
        sim.stop()


def test_silent_controller_is_detected_by_the_heartbeat(sim: SimController) -> None:
    sink = Sink()
    act = make(sim.link, sink, heartbeat_s=0.2)
    try:
        assert act.wait_connected(3)
        sim.drop_requests = 1_000_000  # alive but mute
        assert wait_for(lambda: any(not up and "PONG" in d for up, d in sink.links), 3)
        sim.drop_requests = 0
        assert act.wait_connected(5)
    finally:
        act.close()


def test_wrong_protocol_version_is_refused(tmp_path: Path) -> None:
    sim = SimController(tmp_path / "v2", version=2).start()
    sink = Sink()
    act = make(sim.link, sink)
    try:
        assert wait_for(lambda: any(not up and "protocol 2" in d for up, d in sink.links), 3)
        assert not act.connected
    finally:
        act.close()
        sim.stop()


def test_too_few_gates_is_refused(tmp_path: Path) -> None:
    sim = SimController(tmp_path / "g2", n_gates=2).start()
    sink = Sink()
    act = make(sim.link, sink)
    try:
        assert wait_for(lambda: any("at least 4 gates" in d for _, d in sink.links), 3)
        assert not act.connected
    finally:
        act.close()
        sim.stop()


def test_kernel_tty_name_gets_a_by_id_hint(tmp_path: Path) -> None:
    from daemon.actuator import stable_name_for

    by_id = tmp_path / "by-id"
    by_id.mkdir()
    sim = SimController(tmp_path / "unused")
    try:
        pts = os.ttyname(sim._slave)
        (by_id / "usb-wastesort_gate-if00-port0").symlink_to(pts)
        assert stable_name_for(pts, by_id) == str(by_id / "usb-wastesort_gate-if00-port0")
        assert stable_name_for(str(by_id / "usb-wastesort_gate-if00-port0"), by_id) is None  # already stable
    finally:
        sim.stop()


def test_a_second_daemon_cannot_share_the_port(sim: SimController) -> None:
    first, second = Sink(), Sink()
    a = make(sim.link, first)
    try:
        assert a.wait_connected(3)
        b = make(sim.link, second)
        try:
            assert wait_for(lambda: any(not up and "lock" in d.lower() for up, d in second.links), 3)
            assert not b.connected and a.connected
        finally:
            b.close()
    finally:
        a.close()


def test_a_board_that_misses_the_first_hellos_while_booting_still_connects(sim: SimController) -> None:
    sim.drop_requests = 2  # an Arduino resetting on port open: the first HELLOs are lost
    sink = Sink()
    act = make(sim.link, sink, handshake_timeout_s=3.0)
    try:
        t0 = time.monotonic()
        assert act.wait_connected(5)
        assert act.banner is not None
        assert time.monotonic() - t0 < 2.5  # on the first attempt, by a resent HELLO, not a reconnect
        assert not any(not up for up, _ in sink.links), "no failed attempt on the way"
    finally:
        act.close()


def test_servo_gate_gets_its_rest_angle_at_connect_and_bin_angles_per_item(tmp_path: Path) -> None:
    sim = SimController(tmp_path / "servo", n_gates=4, servo_gates={4}).start()
    sink = Sink()
    s = SerialSettings(port=str(sim.link), reconnect_delay_s=0.05, heartbeat_s=0.3)
    act = SerialActuator(s, gates_needed=4, on_result=sink.result, on_link=sink.link, servo_rest={4: 15}).start()
    try:
        assert act.wait_connected(3)
        assert sim.rest_angles[4] == 15  # set by the handshake, before any item
        act.fire(ActuationRequest(1, 4, 120, time.monotonic(), angle=135))  # a servo gate: SERVO, not FIRE
        act.fire(req(2, 1))  # a solenoid gate: FIRE as before
        act.fire(ActuationRequest(3, 2, 120, time.monotonic(), angle=90))  # gate 2 is no servo on the controller
        assert wait_for(lambda: len(sink.results) == 3, 2)
        by_item = {r.request.item_id: r for r in sink.results}
        assert by_item[1].error is None and by_item[2].error is None
        assert by_item[3].error == "nak:not_servo"
        assert [(m.gate, m.angle_deg, m.hold_ms) for m in sim.moves] == [(4, 15, 0), (4, 135, 120)]
        assert sim.angles[4] == 135 and [f.gate for f in sim.fires] == [1]
    finally:
        act.close()
        sim.stop()


def test_controller_without_the_servo_extension_is_refused(tmp_path: Path) -> None:
    """Old firmware ignores SERVO (an unknown command): a config with servo gates must not run on it."""
    sim = SimController(tmp_path / "old", n_gates=4, servo_gates={4})
    answer = sim.handle_line
    sim.handle_line = lambda line: None if line.startswith(b"SERVO") else answer(line)  # type: ignore[method-assign]
    sim.start()
    sink = Sink()
    s = SerialSettings(port=str(sim.link), reconnect_delay_s=0.05, ack_timeout_ms=20, retries=1, heartbeat_s=5)
    act = SerialActuator(s, gates_needed=4, on_result=sink.result, on_link=sink.link, servo_rest={4: 10}).start()
    try:
        assert wait_for(lambda: any(not up and "servo extension" in d for up, d in sink.links), 5)
        assert not act.connected
    finally:
        act.close()
        sim.stop()


def test_servo_gate_that_is_a_solenoid_on_the_controller_is_refused(tmp_path: Path) -> None:
    sim = SimController(tmp_path / "solenoids", n_gates=4).start()
    sink = Sink()
    s = SerialSettings(port=str(sim.link), reconnect_delay_s=0.05)
    act = SerialActuator(s, gates_needed=4, on_result=sink.result, on_link=sink.link, servo_rest={3: 0}).start()
    try:
        assert wait_for(lambda: any(not up and "servo gate 3" in d and "not_servo" in d for up, d in sink.links), 3)
        assert not act.connected
    finally:
        act.close()
        sim.stop()
