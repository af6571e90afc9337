"""Gates step: test-fire each gate through the daemon's own serial actuator; set distances and lead times.

The FIRE/ACK exchange, retries and handshake are exactly the daemon's (daemon.actuator,
daemon.serial_protocol), so a gate that fires here fires in production. Protocol version 1
has no command to move a servo to an angle: see docs/calibration.md ("Servo angles").
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from calibration.errors import CalibrationError
from daemon.actuation import ActuationRequest, ActuationResult
from daemon.actuator import SerialActuator
from daemon.settings import SerialSettings

JOG_UNSUPPORTED = (
    "servo jogging is not possible: serial protocol version {version} only has HELLO, PING and "
    "FIRE <seq> <gate> <duration_ms>; there is no command to move a servo to an angle or to store "
    "one. Set the open/closed angles in the firmware (firmware/gate_controller/config.h) and see "
    "docs/calibration.md, section 'Servo angles', for the protocol extension this needs."
)


@dataclass(frozen=True)
class FireOutcome:
    """One test firing: acknowledged or the daemon's error code (ack_timeout, nak:bad_gate, ...)."""

    gate: int
    duration_ms: int
    ok: bool
    error: str | None
    attempts: int
    ack_ms: float | None  # from writing FIRE to reading its ACK


@dataclass(frozen=True)
class GateTestResult:
    port: str
    protocol_version: int
    controller_gates: int
    outcomes: list[FireOutcome]

    @property
    def all_ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def parse_gate_values(items: list[str], what: str) -> dict[int, float]:
    """``["2=1050", "3=1250.5"]`` -> {2: 1050.0, 3: 1250.5}; refuses non-positive gates and negative values."""
    out: dict[int, float] = {}
    for item in items:
        gate_s, sep, value_s = item.partition("=")
        try:
            gate, value = int(gate_s), float(value_s)
        except ValueError:
            raise CalibrationError(f"{what} must be GATE=VALUE (e.g. 2=1050), got {item!r}") from None
        if not sep or gate < 1:
            raise CalibrationError(f"{what} must be GATE=VALUE with GATE >= 1, got {item!r}")
        if value < 0:
            raise CalibrationError(f"{what} for gate {gate} must not be negative, got {value}")
        out[gate] = value
    return out


def fire_gates(
    serial: SerialSettings,
    fires: list[tuple[int, int]],
    *,
    repeat: int = 1,
    interval_s: float = 0.5,
    connect_timeout_s: float = 3.0,
) -> GateTestResult:
    """Open the port with the daemon's actuator and fire each (gate, duration_ms), waiting for every ACK."""
    port_path = Path(serial.port)
    if serial.port.startswith("/") and not port_path.exists():
        raise CalibrationError(
            f"serial port {serial.port} does not exist: is the controller plugged in? (ls /dev/serial/by-id/)"
        )
    needed = max(g for g, _ in fires)
    link_messages: list[str] = []
    results: dict[int, ActuationResult] = {}
    done = threading.Condition()

    def on_result(r: ActuationResult) -> None:
        with done:
            results[r.request.item_id] = r
            done.notify_all()

    def on_link(up: bool, message: str) -> None:
        if not up:
            link_messages.append(message)

    actuator = SerialActuator(serial, gates_needed=needed, on_result=on_result, on_link=on_link).start()
    try:
        if not actuator.wait_connected(connect_timeout_s):
            detail = link_messages[-1] if link_messages else f"no banner within {connect_timeout_s:g} s"
            raise CalibrationError(
                f"cannot reach the gate controller on {serial.port}: {detail}\n"
                f"check: the port and baud rate ({serial.baud}), that the daemon is stopped (it holds the port), "
                "that it is a wastesort gate controller, and that the board is not still booting (auto-reset, "
                "see firmware/gate_controller/README.md)"
            )
        banner = actuator.banner
        assert banner is not None
        wait_s = serial.ack_timeout_ms / 1000 * (serial.retries + 1) + 1.0
        outcomes: list[FireOutcome] = []
        item_id = 0
        for _ in range(repeat):
            for gate, duration in fires:
                item_id += 1
                actuator.fire(ActuationRequest(item_id=item_id, gate=gate, duration_ms=duration, due=time.monotonic()))
                with done:
                    done.wait_for(lambda i=item_id: i in results, timeout=wait_s)
                r = results.get(item_id)
                if r is None:
                    outcomes.append(FireOutcome(gate, duration, False, "no_result", 0, None))
                else:
                    ack_ms = (r.acked - r.sent) * 1000 if r.acked is not None and r.sent is not None else None
                    outcomes.append(FireOutcome(gate, duration, r.error is None, r.error, r.attempts, ack_ms))
                time.sleep(max(interval_s, duration / 1000))
        return GateTestResult(serial.port, banner.version, banner.n_gates, outcomes)
    finally:
        actuator.close(ack_wait_s=0.5)
