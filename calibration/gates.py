"""Gates step: test-fire each gate through the daemon's own serial actuator; set distances and lead times;
jog a servo gate through its bin angles.

The FIRE/SERVO exchange, ACK, retries and handshake are exactly the daemon's (daemon.actuator,
daemon.serial_protocol), so a gate that fires or moves here does so in production.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from calibration.errors import CalibrationError
from daemon.actuation import ActuationRequest, ActuationResult
from daemon.actuator import SerialActuator
from daemon.serial_protocol import SERVO_MAX_DEG
from daemon.settings import GateSettings, SerialSettings

MAX_GATE = 255  # the protocol's gate field
_PULSE = GateSettings.model_fields["pulse_ms"].metadata  # ge=1, le=10_000: the daemon's own bounds
PULSE_MIN_MS = next(m.ge for m in _PULSE if getattr(m, "ge", None) is not None)
PULSE_MAX_MS = next(m.le for m in _PULSE if getattr(m, "le", None) is not None)

Command = tuple[int, int, int | None]  # gate, duration_ms (servo: hold_ms, 0 = stay), servo angle or None


@dataclass(frozen=True)
class FireOutcome:
    """One test firing: acknowledged or the daemon's error code (ack_timeout, nak:bad_gate, ...)."""

    gate: int
    duration_ms: int
    ok: bool
    error: str | None
    attempts: int
    ack_ms: float | None  # from writing FIRE to reading its ACK
    angle: int | None = None  # a SERVO move to this angle instead of a FIRE


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
        if not sep or not 1 <= gate <= MAX_GATE:
            raise CalibrationError(f"{what} must be GATE=VALUE with GATE 1..{MAX_GATE}, got {item!r}")
        if value < 0:
            raise CalibrationError(f"{what} for gate {gate} must not be negative, got {value}")
        out[gate] = value
    return out


def parse_angles(text: str) -> list[int]:
    """``"30,90,150"`` -> [30, 90, 150], each within the servo range the config and the controller accept."""
    try:
        angles = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CalibrationError(f"--angles takes whole degrees such as 45 or 30,90,150, got {text!r}") from None
    if not angles:
        raise CalibrationError(f"--angles takes whole degrees such as 45 or 30,90,150, got {text!r}")
    for a in angles:
        check_angle(a, "--angles")
    return angles


def check_angle(angle: int, what: str) -> int:
    """Refuse an angle outside 0..SERVO_MAX_DEG (the config model's and the controller's range)."""
    if not 0 <= angle <= SERVO_MAX_DEG:
        raise CalibrationError(f"{what} {angle} deg is outside the servo range 0..{SERVO_MAX_DEG} deg")
    return angle


def check_pulse(ms: float, what: str) -> int:
    """Refuse a pulse the config model (gates.N.pulse_ms) and the controller (FIRE duration) would reject."""
    if ms != int(ms) or not PULSE_MIN_MS <= ms <= PULSE_MAX_MS:
        raise CalibrationError(f"{what} must be whole milliseconds {PULSE_MIN_MS}..{PULSE_MAX_MS}, got {ms:g}")
    return int(ms)


def jog_servo(
    serial: SerialSettings, gate: int, angles: list[int], *, rest: int | None, hold_s: float,
    connect_timeout_s: float = 3.0,
) -> GateTestResult:
    """Move ``gate``'s servo to each angle and keep it there ``hold_s`` (look where it points), then back to
    ``rest``. Each move is a SERVO with hold 0, so the servo stays put while the technician looks."""
    commands: list[Command] = [(gate, 0, a) for a in angles] + ([(gate, 0, rest)] if rest is not None else [])
    servo_rest = {gate: rest} if rest is not None else None  # the daemon's connect check: a servo gate?
    return fire_gates(serial, commands, interval_s=hold_s, connect_timeout_s=connect_timeout_s,
                      servo_rest=servo_rest)


def fire_gates(
    serial: SerialSettings,
    fires: list[Command],
    *,
    repeat: int = 1,
    interval_s: float = 0.5,
    connect_timeout_s: float = 3.0,
    servo_rest: dict[int, int] | None = None,
    gates_needed: int = 1,
) -> GateTestResult:
    """Open the port with the daemon's actuator and send each (gate, duration_ms, angle), waiting for every ACK.

    With an angle the command is the servo move (SERVO) the daemon sends for a servo gate's bin. With no
    commands it only shakes hands: the result then says which protocol and how many gates the controller has.
    """
    port_path = Path(serial.port)
    if serial.port.startswith("/") and not port_path.exists():
        raise CalibrationError(
            f"serial port {serial.port} does not exist: is the controller plugged in? (ls /dev/serial/by-id/)"
        )
    needed = max([gates_needed, *(c[0] for c in fires)])
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

    actuator = SerialActuator(serial, gates_needed=needed, on_result=on_result, on_link=on_link,
                              servo_rest=servo_rest).start()
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
            for gate, duration, angle in fires:
                item_id += 1
                actuator.fire(ActuationRequest(item_id=item_id, gate=gate, duration_ms=duration, due=time.monotonic(),
                                               angle=angle))
                with done:
                    done.wait_for(lambda i=item_id: i in results, timeout=wait_s)
                r = results.get(item_id)
                if r is None:
                    outcomes.append(FireOutcome(gate, duration, False, "no_result", 0, None, angle))
                else:
                    ack_ms = (r.acked - r.sent) * 1000 if r.acked is not None and r.sent is not None else None
                    outcomes.append(FireOutcome(gate, duration, r.error is None, r.error, r.attempts, ack_ms, angle))
                time.sleep(max(interval_s, duration / 1000))
        return GateTestResult(serial.port, banner.version, banner.n_gates, outcomes)
    finally:
        actuator.close(ack_wait_s=0.5)
