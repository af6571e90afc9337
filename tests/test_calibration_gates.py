"""Gates step against the daemon's controller simulator on a real pseudo-terminal."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from calibration.cli import main
from daemon.cli import cmd_check_config
from daemon.settings import load_settings
from daemon.sim_controller import SimController
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


def test_jog_explains_what_the_protocol_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    assert main(["gates", "--config", str(cfg), "--jog"]) == 2
    err = capsys.readouterr().err
    assert "no command to move a servo to an angle" in err and "docs/calibration.md" in err


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
