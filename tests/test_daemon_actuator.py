"""Serial actuator against the controller simulator on a real pty: ACK, NAK, retry, unplug/replug, banner."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import structlog.testing
from daemon_fixtures import sim, wait_for  # noqa: F401 (pytest fixtures)

from daemon.actuation import ActuationRequest, ActuationResult
from daemon.actuator import SerialActuator
from daemon.settings import SerialSettings
from daemon.sim_controller import SimController


class Sink:
    def __init__(self) -> None:
        self.results: list[ActuationResult] = []
        self.links: list[tuple[bool, str]] = []
        self.alerts: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def result(self, r: ActuationResult) -> None:
        with self.lock:
            self.results.append(r)

    def link(self, up: bool, detail: str) -> None:
        self.links.append((up, detail))

    def alert(self, kind: str, message: str) -> None:
        self.alerts.append((kind, message))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.alerts]


def make(port: Path, sink: Sink, servo_rest: dict[int, int] | None = None, rng: random.Random | None = None,
         **kw: object) -> SerialActuator:
    opts = {"reconnect_delay_s": 0.05, "reconnect_max_delay_s": 0.2, "heartbeat_s": 0.3, **kw}
    s = SerialSettings(port=str(port), **opts)
    return SerialActuator(s, gates_needed=4, on_result=sink.result, on_link=sink.link, servo_rest=servo_rest,
                          on_alert=sink.alert, rng=rng).start()


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
    act = make(sim.link, sink, ack_timeout_ms=30, retries=1, max_late_ms=40, heartbeat_s=5)
    try:
        assert act.wait_connected(3)
        sim.drop_requests = 10
        act.fire(ActuationRequest(1, 2, 60, time.monotonic() - 0.02))  # sent 20 ms late: a retry would be 50 ms late
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


# --- restarts, resets, noise (issue 18) -----------------------------------------------------------
def fire_and_wait(act: SerialActuator, sink: Sink, gates: list[int]) -> None:
    start = len(sink.results)
    for i, gate in enumerate(gates):
        act.fire(req(100 + i, gate))
    assert wait_for(lambda: len(sink.results) == start + len(gates), 2)


def test_a_restarted_daemon_fires_on_a_controller_that_kept_its_state(sim: SimController) -> None:
    """Native-USB boards do not reset when the port opens: the second daemon run must still fire every gate,
    even when it happens to use the very same sequence numbers as the first (HELLO starts a new connection)."""
    for run in range(2):
        sink = Sink()
        act = make(sim.link, sink, rng=random.Random(18))  # the same seq start in both runs
        try:
            assert act.wait_connected(3)
            fire_and_wait(act, sink, [1, 3, 2])
            assert all(r.error is None for r in sink.results)
        finally:
            act.close()
        assert len(sim.fires) == 3 * (run + 1), f"run {run + 1}: acknowledged but not fired"
    assert [f.seq for f in sim.fires[:3]] == [f.seq for f in sim.fires[3:]]  # the collision really happened


def test_a_controller_that_ignores_hello_still_fires_thanks_to_a_random_first_seq(sim: SimController) -> None:
    """Firmware older than the HELLO rule keeps its table; the random first seq of each connection avoids it."""
    answer = sim.handle_line

    def old_firmware(line: bytes) -> object:
        kept = dict(sim._recent)
        reply = answer(line)
        sim._recent.update(kept)  # HELLO does not clear anything here
        return reply

    sim.handle_line = old_firmware  # type: ignore[method-assign]
    for run in range(2):
        sink = Sink()
        act = make(sim.link, sink, rng=random.Random(run))
        try:
            assert act.wait_connected(3)
            fire_and_wait(act, sink, [1, 3, 2])
        finally:
            act.close()
    assert len(sim.fires) == 6


def test_an_unprompted_banner_is_a_reset_rehandshake_restores_the_servo_and_alerts(tmp_path: Path) -> None:
    sim = SimController(tmp_path / "servo", n_gates=4, servo_gates={4}).start()
    sink = Sink()
    act = make(sim.link, sink, servo_rest={4: 15})
    try:
        assert act.wait_connected(3) and sim.rest_angles[4] == 15
        time.sleep(0.6)  # past the window in which a banner still answers our HELLO
        act.fire(req(1, 2))
        assert wait_for(lambda: len(sink.results) == 1, 2)
        sim.reset(announce=True)  # brief power loss: servo back at its power-on angle, banner sent
        assert sim.rest_angles[4] == 0
        assert wait_for(lambda: "controller_reset" in sink.kinds(), 2), sink.alerts
        assert wait_for(lambda: sim.rest_angles[4] == 15, 2)  # the daemon restored the rest angle
        assert "banner unprompted" in sink.alerts[-1][1] and "servo rest angles restored" in sink.alerts[-1][1]
        assert act.connected and act.resets == 1
        assert not any(not up for up, _ in sink.links)  # a reset, not a lost link
        act.fire(req(2, 3))
        assert wait_for(lambda: len(sink.results) == 2 and sink.results[-1].acked is not None, 2)
        assert [f.gate for f in sim.fires] == [2, 3]
    finally:
        act.close()
        sim.stop()


def test_a_silent_reset_is_seen_by_the_session_check(tmp_path: Path) -> None:
    sim = SimController(tmp_path / "silent", n_gates=4, servo_gates={4}).start()
    sink = Sink()
    act = make(sim.link, sink, servo_rest={4: 15}, heartbeat_s=0.2)
    try:
        assert act.wait_connected(3)
        sim.reset(announce=False)  # 0.2 s brown-out whose banner was lost
        assert wait_for(lambda: "controller_reset" in sink.kinds(), 2), sink.alerts
        assert "lost its session" in sink.alerts[-1][1]
        assert wait_for(lambda: sim.rest_angles[4] == 15 and sim.session != 0, 2)
        time.sleep(0.5)  # the new session holds: no second reset alert
        assert sink.kinds().count("controller_reset") == 1 and act.connected
    finally:
        act.close()
        sim.stop()


def test_firmware_without_sessions_keeps_working_on_plain_ping(sim: SimController) -> None:
    answer = sim.handle_line
    seen: list[bytes] = []

    def old_firmware(line: bytes) -> object:
        seen.append(line.split(b" ")[0])
        return None if line.startswith((b"SESSION", b"CHECK")) else answer(line)

    sim.handle_line = old_firmware  # type: ignore[method-assign]
    sink = Sink()
    act = make(sim.link, sink, heartbeat_s=0.2)
    try:
        assert act.wait_connected(3)
        time.sleep(0.8)
        assert act.connected and not any(not up for up, _ in sink.links)
        assert b"PING" in seen and b"CHECK" not in seen
    finally:
        act.close()


def test_a_hung_controller_on_a_noisy_line_is_detected(sim: SimController) -> None:
    """Line noise is no sign of life: only a valid reply resets the heartbeat."""
    sink = Sink()
    act = make(sim.link, sink, heartbeat_s=0.2)
    stop = threading.Event()

    def noise() -> None:
        while not stop.wait(0.02):
            sim.write(b"\x00garbage\xff*ZZ\n")

    try:
        assert act.wait_connected(3)
        sim.drop_requests = 1_000_000  # hung: answers nothing...
        threading.Thread(target=noise, daemon=True).start()  # ...while the line picks up noise
        t0 = time.monotonic()
        assert wait_for(lambda: any(not up and "PONG" in d for up, d in sink.links), 2)
        assert time.monotonic() - t0 < 1.5  # heartbeat_s 0.2: a probe, then 0.2 s without any valid reply
    finally:
        stop.set()
        act.close()


def test_malformed_lines_are_counted_logged_sparingly_and_alerted_once(sim: SimController) -> None:
    sink = Sink()
    act = make(sim.link, sink, heartbeat_s=5)
    try:
        assert act.wait_connected(3)
        with structlog.testing.capture_logs() as logs:
            for i in range(60):
                sim.write(b"ACK %d*00\n" % i)  # wrong checksum
            assert wait_for(lambda: act.malformed_lines == 60, 2)
            fire_and_wait(act, sink, [1])  # the link still works
        warnings = [e for e in logs if e["event"] == "serial_malformed_line"]
        assert len(warnings) == 1 and warnings[0]["total"] == 1
        assert sink.kinds() == ["serial_noise"]
        assert sink.results[-1].error is None
    finally:
        act.close()


def test_a_lost_fire_is_retried_in_time_with_the_default_settings(sim: SimController) -> None:
    sink = Sink()
    act = make(sim.link, sink)  # default ack_timeout_ms, retries, max_late_ms
    try:
        assert act.wait_connected(3)
        sim.drop_requests = 1
        act.fire(req(1, 2))
        assert wait_for(lambda: len(sink.results) == 1, 2)
        r = sink.results[0]
        assert r.error is None and r.attempts == 2, r
        assert len(sim.fires) == 1
        assert sim.fires[0].t_monotonic - r.request.due <= SerialSettings().max_late_ms / 1000 + 0.005
    finally:
        act.close()


def test_a_controller_that_stays_mute_after_its_reset_is_a_lost_link(sim: SimController) -> None:
    sink = Sink()
    act = make(sim.link, sink, handshake_timeout_s=0.5)
    try:
        assert act.wait_connected(3)
        time.sleep(0.6)
        sim.drop_requests = 1_000_000  # it restarts, announces itself, then answers nothing
        sim.reset(announce=True)
        assert wait_for(lambda: any(not up and "after controller reset" in d for up, d in sink.links), 3)
        assert "controller_reset" in sink.kinds() and not act.connected
        sim.drop_requests = 0
        assert act.wait_connected(3) and sink.links[-1][0] is True  # reconnected as after any loss
    finally:
        act.close()
