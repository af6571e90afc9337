"""A gate controller simulator that speaks docs/serial-protocol.md over a pseudo-terminal.

It stands in for the real controller in the demo and the tests: it creates a pty
pair, publishes the daemon-side end under a stable symlink (like
/dev/serial/by-id/...), answers HELLO/PING/FIRE and reports every actuation with
its CLOCK_MONOTONIC time (comparable across processes on Linux). Gates named in
``servo_gates`` also take the SERVO extension; the simulator keeps each one's angle.
Like the firmware, it keeps its state while no daemon is connected (a native-USB board
does not reset when the port opens): only HELLO or ``reset()`` (a power cycle) clears it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon import serial_protocol as sp


@dataclass(frozen=True)
class FireRecord:
    """One gate actuation performed by the simulated controller."""

    seq: int
    gate: int
    duration_ms: int
    t_monotonic: float


@dataclass(frozen=True)
class ServoRecord:
    """One SERVO command performed by the simulated controller (hold_ms 0: a new rest angle)."""

    seq: int
    gate: int
    angle_deg: int
    hold_ms: int
    t_monotonic: float


DEFAULT_REST_DEG = 0  # a servo's rest angle until the daemon sets one (the firmware's closed_deg)


class SimController:
    """Owns the pty master; call start() to serve in a thread or serve_forever() to block."""

    def __init__(
        self,
        link: str | Path,
        n_gates: int = 4,
        version: int = sp.PROTOCOL_VERSION,
        on_fire: Callable[[FireRecord], None] | None = None,
        servo_gates: set[int] | frozenset[int] = frozenset(),
        on_servo: Callable[[ServoRecord], None] | None = None,
    ) -> None:
        self.link = Path(link)
        self.n_gates = n_gates
        self.version = version
        self.on_fire = on_fire
        self.on_servo = on_servo
        self.servo_gates = set(servo_gates)
        self.fires: list[FireRecord] = []
        self.moves: list[ServoRecord] = []
        self.rest_angles: dict[int, int] = {g: DEFAULT_REST_DEG for g in self.servo_gates}
        self.angles: dict[int, int] = dict(self.rest_angles)  # last commanded angle per servo gate
        self.malformed = 0
        self.drop_requests = 0  # fault injection: ignore this many incoming lines, as if lost on the wire
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recent: dict[int, sp.Fire | sp.Servo] = {}  # seq -> command, to de-duplicate retransmissions
        self.session = 0  # set by SESSION; 0 = none (after boot or reset())
        self.boots = 1
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tmp = self.link.with_name(self.link.name + f".tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self._slave))
        os.replace(tmp, self.link)

    def start(self) -> SimController:
        self._thread = threading.Thread(target=self.serve_forever, name="sim-controller", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Make serve_forever() return (safe from a signal handler)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop serving and close the pty: the daemon sees the port vanish, as on a USB unplug."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            if self.link.is_symlink():
                self.link.unlink()
        except OSError:
            pass

    def reset(self, announce: bool = True) -> None:
        """Power-cycle the controller: RAM is lost (remembered commands, session, servo rest angles).

        ``announce``: send the banner unprompted, as the firmware does at boot; False is a silent
        reset (a banner lost in noise, or older firmware), which only the session check reveals.
        """
        self._recent.clear()
        self.session = 0
        self.boots += 1
        self.rest_angles = {g: DEFAULT_REST_DEG for g in self.servo_gates}
        self.angles = dict(self.rest_angles)
        if announce:
            self.write(sp.encode(sp.Banner(self.version, self.n_gates)))

    def write(self, data: bytes) -> None:
        """Bytes to the daemon, as if sent by the controller (also for injecting line noise)."""
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def serve_forever(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.1)
                if not ready:
                    continue
                chunk = os.read(self._master, 4096)
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply = self.handle_line(line)
                if reply is not None:
                    self.write(sp.encode(reply))
            if len(buf) > sp.MAX_LINE_BYTES:
                buf = b""
                self.malformed += 1

    def handle_line(self, line: bytes) -> sp.Message | None:
        """Answer one request line; malformed lines get no reply (the sender times out and retries)."""
        if self.drop_requests > 0:
            self.drop_requests -= 1
            return None
        try:
            msg = sp.decode(line)
        except sp.ProtocolError:
            self.malformed += 1
            return None
        match msg:
            case sp.Hello():
                self._recent.clear()  # a new connection: no command of an earlier one is a retransmission
                return sp.Banner(self.version, self.n_gates)
            case sp.Session(seq, session):
                if session == 0:
                    return sp.Nak(seq, "bad_session")
                self.session = session
                return sp.Ack(seq)
            case sp.Check(seq, session):
                if session == 0 or session != self.session:
                    return sp.Nak(seq, "no_session")
                return sp.Pong(seq)
            case sp.Ping(seq):
                return sp.Pong(seq)
            case sp.Fire(seq, gate, duration_ms):
                if not 1 <= gate <= self.n_gates:
                    return sp.Nak(seq, "bad_gate")
                if self._is_retransmission(msg):
                    return sp.Ack(seq)  # the gate already fired
                record = FireRecord(seq, gate, duration_ms, time.monotonic())
                self.fires.append(record)
                if self.on_fire is not None:
                    self.on_fire(record)
                return sp.Ack(seq)
            case sp.Servo(seq, gate, angle, hold_ms):
                if not 1 <= gate <= self.n_gates:
                    return sp.Nak(seq, "bad_gate")
                if gate not in self.servo_gates:
                    return sp.Nak(seq, "not_servo")
                if angle > sp.SERVO_MAX_DEG:
                    return sp.Nak(seq, "bad_angle")
                if self._is_retransmission(msg):
                    return sp.Ack(seq)
                self._move(ServoRecord(seq, gate, angle, hold_ms, time.monotonic()))
                return sp.Ack(seq)
        return None  # replies (ACK, PONG...) are not requests

    def _is_retransmission(self, msg: sp.Fire | sp.Servo) -> bool:
        """True when ``msg`` repeats a remembered command (its ACK was lost); else remember it."""
        if self._recent.get(msg.seq) == msg:
            return True
        self._recent[msg.seq] = msg
        if len(self._recent) > 256:
            self._recent.pop(next(iter(self._recent)))
        return False

    def _move(self, record: ServoRecord) -> None:
        """Apply a SERVO command; ``angles`` holds the commanded angle (the return to rest is not timed here)."""
        if record.hold_ms == 0:
            self.rest_angles[record.gate] = record.angle_deg
        self.angles[record.gate] = record.angle_deg
        self.moves.append(record)
        if self.on_servo is not None:
            self.on_servo(record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wastesort sim-controller", description=__doc__)
    parser.add_argument("--link", required=True, help="symlink to create for the daemon side of the pty")
    parser.add_argument("--gates", type=int, default=4, help="number of gates (1..N)")
    parser.add_argument("--version", type=int, default=sp.PROTOCOL_VERSION, help="protocol version to announce")
    parser.add_argument("--servo", default="", help="servo gates, e.g. 4 or 2,4 (the others are solenoids)")
    args = parser.parse_args(argv)
    try:
        servo_gates = {int(g) for g in args.servo.split(",") if g.strip()}
    except ValueError:
        parser.error(f"--servo takes gate numbers such as 2,4, got {args.servo!r}")

    def print_fire(r: FireRecord) -> None:
        print(json.dumps({"event": "fire", **asdict(r)}), flush=True)

    def print_servo(r: ServoRecord) -> None:
        print(json.dumps({"event": "servo", **asdict(r)}), flush=True)

    sim = SimController(args.link, n_gates=args.gates, version=args.version, on_fire=print_fire,
                        servo_gates=servo_gates, on_servo=print_servo)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sim.request_stop())  # clean exit removes the link
    print(json.dumps({"event": "ready", "link": str(sim.link), "pty": os.ttyname(sim._slave)}), flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
