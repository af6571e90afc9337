"""Gates step against the daemon's controller simulator on a real pseudo-terminal."""

from __future__ import annotations

import os
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from calibration.cli import main
from daemon.cli import cmd_check_config
from daemon.settings import load_settings
from daemon.sim_controller import SimController
from daemon_fixtures import wait_for
from test_calibration_config import make_config


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[SimController]:
    sim = SimController(tmp_path / "gate-controller", n_gates=4).start()
    yield sim
    sim.stop()


def test_fire_all_gates_and_set_distances(tmp_path: Path, controller: SimController,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    argv = ["gates", "--config", str(cfg), "--port", str(controller.link), "--fire", "all", "--interval-s", "0.05",
            "--distance", "2=1050", "--lead-time", "2=22.5", "--pulse", "4=150"]
    assert main(argv) == 0
    assert [(f.gate, f.duration_ms) for f in controller.fires] == [(1, 80), (2, 80), (3, 80), (4, 150)]
    out = capsys.readouterr().out
    assert "controller on" in out and "protocol 1, 4 gates" in out
    assert out.count("ACK after") == 4
    s = load_settings(cfg)
    assert s.gates[2].distance_mm == 1050 and s.gates[2].lead_time_ms == 22.5 and s.gates[4].pulse_ms == 150
    assert s.gates[1].distance_mm == 900  # untouched
    assert cmd_check_config(cfg) == 0


def test_fire_selected_gates_repeatedly_with_custom_pulse(tmp_path: Path, controller: SimController) -> None:
    cfg = make_config(tmp_path)
    argv = ["gates", "--config", str(cfg), "--port", str(controller.link), "--fire", "3,1", "--repeat", "2",
            "--pulse-ms", "40", "--interval-s", "0.05"]
    assert main(argv) == 0
    assert [(f.gate, f.duration_ms) for f in controller.fires] == [(3, 40), (1, 40), (3, 40), (1, 40)]
    assert not list(cfg.parent.glob("*.bak-*"))  # nothing to change in the config


def test_gate_the_controller_lacks_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = SimController(tmp_path / "small", n_gates=2).start()
    try:
        cfg = make_config(tmp_path)
        assert main(["gates", "--config", str(cfg), "--port", str(sim.link), "--fire", "all"]) == 2
        assert "with 2 gates" in capsys.readouterr().err
        assert sim.fires == []
    finally:
        sim.stop()


def test_unacknowledged_fire_is_reported_as_failure(tmp_path: Path, controller: SimController,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The controller answers HELLO but swallows FIRE: retried by the daemon's actuator, then ack_timeout."""
    answer = controller.handle_line
    monkeypatch.setattr(controller, "handle_line", lambda line: None if line.startswith(b"FIRE") else answer(line))
    cfg = make_config(tmp_path)
    code = main(["gates", "--config", str(cfg), "--port", str(controller.link), "--fire", "2", "--interval-s", "0"])
    assert code == 1
    assert "gate 2: FAILED (ack_timeout)" in capsys.readouterr().out
    assert controller.fires == []


def test_controller_that_stops_answering_is_refused(tmp_path: Path, controller: SimController,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    controller.drop_requests = 10**6  # ignores everything, HELLO included
    cfg = make_config(tmp_path)
    code = main(["gates", "--config", str(cfg), "--port", str(controller.link), "--fire", "1",
                 "--connect-timeout-s", "1"])
    assert code == 2 and "no banner" in capsys.readouterr().err


def test_unreachable_port_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    assert main(["gates", "--config", str(cfg), "--port", str(tmp_path / "ttyUSB9"), "--fire", "all"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_silent_device_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pty nobody answers on (like a serial port with the wrong device behind it)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        cfg = make_config(tmp_path)
        code = main(["gates", "--config", str(cfg), "--port", os.ttyname(slave), "--fire", "1",
                     "--connect-timeout-s", "1"])
        assert code == 2
        assert "cannot reach the gate controller" in capsys.readouterr().err
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def servo_controller(tmp_path: Path) -> Iterator[SimController]:
    sim = SimController(tmp_path / "servo-controller", n_gates=4, servo_gates={3, 4}).start()
    yield sim
    sim.stop()


def test_jog_saves_bin_angles_the_daemon_accepts(tmp_path: Path, servo_controller: SimController,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    argv = ["gates", "--config", str(cfg), "--port", str(servo_controller.link), "--jog", "3",
            "--angles", "40,140", "--bin-names", "metal,plastic", "--rest", "90", "--hold-s", "0.05"]
    assert main(argv) == 0
    # Connect check (rest), each bin angle, back to rest: all SERVO with hold 0, so the servo stays put.
    assert [(m.gate, m.angle_deg, m.hold_ms) for m in servo_controller.moves] == \
        [(3, 90, 0), (3, 40, 0), (3, 140, 0), (3, 90, 0)]
    assert servo_controller.angles[3] == 90 and servo_controller.fires == []
    out = capsys.readouterr().out
    assert "gate 3: at 40 deg" in out and "gates.3.bin_angles.plastic: (unset) -> 140" in out
    s = load_settings(cfg)
    g = s.gates[3]
    assert (g.kind, g.rest_angle, g.bin_angles) == ("servo", 90, {"metal": 40, "plastic": 140})
    assert g.distance_mm == 1300  # untouched
    assert cmd_check_config(cfg) == 0

    # The daemon's actuator then sends each item's bin angle, and sets the rest angle at connect.
    from daemon.actuation import ActuationRequest
    from daemon.actuator import SerialActuator

    results = []
    act = SerialActuator(s.serial.model_copy(update={"port": str(servo_controller.link)}), 4,
                         on_result=results.append, on_link=lambda *_: None,
                         servo_rest=s.servo_rest_angles()).start()
    try:
        assert act.wait_connected(3)
        act.fire(ActuationRequest(1, 3, g.pulse_ms, time.monotonic(), g.angle_for("plastic")))
        assert wait_for(lambda: len(results) == 1, 2) and results[0].error is None
    finally:
        act.close()
    assert [(m.angle_deg, m.hold_ms) for m in servo_controller.moves[-2:]] == [(90, 0), (140, 80)]


def test_jog_single_angle_moves_without_saving(tmp_path: Path, servo_controller: SimController) -> None:
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    assert main(["gates", "--config", str(cfg), "--port", str(servo_controller.link), "--jog", "4",
                 "--angle", "75", "--hold-s", "0"]) == 0
    assert [(m.gate, m.angle_deg) for m in servo_controller.moves] == [(4, 75)]  # no rest known: stays there
    assert cfg.read_text() == before


def test_jog_to_bad_angle_or_solenoid_gate_is_refused(tmp_path: Path, servo_controller: SimController,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    base = ["gates", "--config", str(cfg), "--port", str(servo_controller.link), "--hold-s", "0"]
    assert main(base + ["--jog", "4", "--angles", "30,190", "--bin-names", "trash,reject", "--rest", "0"]) == 2
    assert "--angles 190 deg is outside the servo range 0..180 deg" in capsys.readouterr().err  # checked locally
    assert main(base + ["--jog", "2", "--angles", "30", "--bin-names", "glass", "--rest", "0"]) == 2
    assert "controller refused servo gate 2 at 0 deg: not_servo" in capsys.readouterr().err
    assert main(base + ["--jog", "2", "--angles", "30"]) == 1  # no rest: the move itself is refused
    assert "FAILED (nak:not_servo)" in capsys.readouterr().out
    assert cfg.read_text() == before
    assert servo_controller.moves == []  # nothing reached the controller


def test_jog_against_firmware_without_the_extension_explains(tmp_path: Path, controller: SimController,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    answer = controller.handle_line
    monkeypatch.setattr(controller, "handle_line", lambda line: None if line.startswith(b"SERVO") else answer(line))
    cfg = make_config(tmp_path)
    assert main(["gates", "--config", str(cfg), "--port", str(controller.link), "--jog", "4", "--angles", "30",
                 "--hold-s", "0"]) == 1
    assert "without the servo extension" in capsys.readouterr().out


def test_jog_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    assert main(["gates", "--config", str(cfg), "--jog", "4"]) == 2
    assert main(["gates", "--config", str(cfg), "--jog", "4", "--angles", "1,2", "--bin-names", "a"]) == 2
    assert main(["gates", "--config", str(cfg), "--jog", "4", "--angles", "x"]) == 2
    assert main(["gates", "--config", str(cfg), "--jog", "3", "--angles", "40", "--bin-names", "metal"]) == 2
    assert main(["gates", "--config", str(cfg), "--angles", "40"]) == 2
    err = capsys.readouterr().err
    assert "--jog needs --angles" in err and "one per angle" in err and "whole degrees" in err
    assert "has no rest_angle yet: give --rest" in err and "go with --jog GATE" in err


def test_nonsense_values_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    assert main(["gates", "--config", str(cfg), "--distance", "2=0"]) == 2
    assert main(["gates", "--config", str(cfg), "--distance", "2=100"]) == 2  # inside the 640 mm belt region
    assert main(["gates", "--config", str(cfg), "--lead-time", "2=-3"]) == 2
    assert main(["gates", "--config", str(cfg), "--lead-time", "7=10"]) == 2  # no such gate
    assert main(["gates", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "must be positive" in err and "daemon's validation" in err and "not in [gates]" in err
    assert cfg.read_text() == before


def test_arguments_are_checked_locally_with_the_daemons_bounds(tmp_path: Path, controller: SimController,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Bad --pulse-ms, angles and --rest are refused before anything is sent (no silent default, no wiring checklist)."""
    cfg = make_config(tmp_path)
    before = cfg.read_bytes()
    base = ["gates", "--config", str(cfg), "--port", str(controller.link), "--interval-s", "0"]
    for pulse in ("0", "-5", "99999"):
        assert main(base + ["--fire", "1", "--pulse-ms", pulse]) == 2
        assert "--pulse-ms must be whole milliseconds 1..10000" in capsys.readouterr().err
    assert main(base + ["--pulse", "2=150.5"]) == 2
    assert "whole milliseconds" in capsys.readouterr().err
    assert main(base + ["--jog", "4", "--angles", "30", "--rest", "200", "--bin-names", "reject"]) == 2
    err = capsys.readouterr().err
    assert "--rest 200 deg is outside the servo range 0..180 deg" in err and "cannot reach" not in err
    assert main(base + ["--jog", "4", "--angles", "181"]) == 2
    assert "outside the servo range" in capsys.readouterr().err
    assert controller.fires == [] and controller.moves == []
    assert cfg.read_bytes() == before
    assert main(base + ["--fire", "1", "--pulse-ms", "1"]) == 0  # the bounds themselves are fine
    assert [(f.gate, f.duration_ms) for f in controller.fires] == [(1, 1)]
    assert main(base + ["--pulse", "4=10000"]) == 0
    assert load_settings(cfg).gates[4].pulse_ms == 10000


def test_distance_for_a_gate_the_controller_lacks_is_refused(tmp_path: Path, controller: SimController,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    before = cfg.read_bytes()
    base = ["gates", "--config", str(cfg), "--port", str(controller.link)]
    assert main(base + ["--distance", "5=1700"]) == 2
    assert "has 4 gates (1..4); it has no gate 5" in capsys.readouterr().err
    assert main(base + ["--distance", "300=1700"]) == 2
    assert "GATE 1..255" in capsys.readouterr().err
    assert main(["gates", "--config", str(cfg), "--port", str(tmp_path / "nope"), "--distance", "5=1700"]) == 2
    assert "did not answer" in capsys.readouterr().err
    assert cfg.read_bytes() == before


def test_distance_for_a_new_gate_the_controller_has(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = SimController(tmp_path / "six", n_gates=6).start()
    try:
        cfg = make_config(tmp_path)
        assert main(["gates", "--config", str(cfg), "--port", str(sim.link), "--distance", "5=1700"]) == 0
        assert load_settings(cfg).gates[5].distance_mm == 1700
        assert sim.fires == []
    finally:
        sim.stop()


def test_daemon_log_lines_stay_off_the_technicians_output(tmp_path: Path, controller: SimController,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon's actuator logs (structlog) while connecting; the technician sees only the step's own lines."""
    cfg = make_config(tmp_path)
    assert main(["gates", "--config", str(cfg), "--port", str(controller.link), "--fire", "1", "--interval-s", "0"]) == 0
    captured = capsys.readouterr()
    assert "serial_" not in captured.out and "serial_" not in captured.err
    assert captured.out.startswith("controller on")
