"""Drives the gate controller over serial: HELLO/banner check, FIRE/SERVO with ACK, retries, PING, reconnect.

One I/O thread owns connecting, reading and timeouts; ``fire()`` is called by the
scheduler thread at the due time and only writes one line, so a slow ACK never
delays the next gate.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import serial
import structlog

from daemon import serial_protocol as sp
from daemon.actuation import ActuationRequest, ActuationResult
from daemon.settings import SerialSettings

log = structlog.get_logger(__name__)

HELLO_RESEND_S = 0.5  # handshake: HELLO is repeated this often until the banner comes
READ_TIMEOUT_S = 0.005
WRITE_TIMEOUT_S = 0.1  # a write blocked this long means a dead link: never stall the scheduler longer


@dataclass
class _Pending:
    request: ActuationRequest
    line: bytes
    result: ActuationResult
    deadline: float


def stable_name_for(port: str, by_id_dir: Path = Path("/dev/serial/by-id")) -> str | None:
    """The /dev/serial/by-id link for ``port`` when ``port`` is a kernel name like /dev/ttyUSB0."""
    if not port.startswith("/dev/") or os.path.islink(port) or not by_id_dir.is_dir():
        return None  # a symlink (by-id, by-path, udev rule) is already a stable name
    try:
        target = os.path.realpath(port)
        for link in sorted(by_id_dir.iterdir()):
            if os.path.realpath(link) == target:
                return str(link)
    except OSError:
        return None
    return None


def command_for(request: ActuationRequest, seq: int) -> sp.Fire | sp.Servo:
    """FIRE for a solenoid gate; SERVO to the request's bin angle for a servo gate."""
    if request.angle is None:
        return sp.Fire(seq, request.gate, request.duration_ms)
    return sp.Servo(seq, request.gate, request.angle, request.duration_ms)


class SerialLinkError(Exception):
    """The port could not be opened or the controller failed the handshake."""


class SerialActuator:
    """Sends FIRE commands; reports every outcome through ``on_result`` and link changes through ``on_link``."""

    def __init__(
        self,
        settings: SerialSettings,
        gates_needed: int,
        on_result: Callable[[ActuationResult], None],
        on_link: Callable[[bool, str], None],
        servo_rest: dict[int, int] | None = None,
    ) -> None:
        self._s = settings
        self._gates_needed = gates_needed
        self._servo_rest = dict(servo_rest or {})  # servo gate -> rest angle, set at every connect
        self._on_result = on_result
        self._on_link = on_link
        self._port: serial.Serial | None = None
        self._lock = threading.Lock()  # guards _port, _pending, _seq and writes
        self._pending: dict[int, _Pending] = {}
        self._ping: tuple[int, float] | None = None
        self._seq = 0
        self._last_rx = 0.0
        self._stop = threading.Event()
        self._connected_evt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serial-io", daemon=True)
        self._down_reported = False  # one serial_lost report per outage, not one per retry
        self.banner: sp.Banner | None = None
        self.reconnects = 0

    # --- public -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected_evt.is_set()

    def start(self) -> SerialActuator:
        hint = stable_name_for(self._s.port)
        if hint is not None:
            log.warning("serial_port_not_stable", port=self._s.port, use=hint,
                        why="ttyUSB numbers change when the adapter is re-plugged; the by-id name does not")
        self._thread.start()
        return self

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected_evt.wait(timeout_s)

    def fire(self, request: ActuationRequest) -> None:
        """Send FIRE now (called at the due time). Never blocks on the acknowledgement."""
        now = time.monotonic()
        write_error: str | None = None
        with self._lock:
            if self._port is None:
                result = ActuationResult(request, error="serial_down")
            else:
                self._seq = sp.next_seq(self._seq)
                line = sp.encode(command_for(request, self._seq))
                result = ActuationResult(request, sent=now, seq=self._seq, attempts=1)
                try:
                    self._port.write(line)
                    self._pending[self._seq] = _Pending(request, line, result, now + self._s.ack_timeout_ms / 1000)
                    return
                except (serial.SerialException, OSError) as e:
                    result = replace(result, error="serial_lost")
                    write_error = str(e)
        self._on_result(result)
        if write_error is not None:
            self._lost(f"write failed: {write_error}")

    def close(self, ack_wait_s: float = 1.0) -> None:
        """Wait up to ``ack_wait_s`` for outstanding ACKs, then close the port."""
        end = time.monotonic() + ack_wait_s
        while time.monotonic() < end:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            leftovers = self._drop_port_locked(error="shutdown")
        self._connected_evt.clear()
        for r in leftovers:
            self._on_result(r)

    # --- I/O thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        delay = self._s.reconnect_delay_s
        buf = b""
        while not self._stop.is_set():
            if self._port is None:
                try:
                    self._connect()
                    delay = self._s.reconnect_delay_s
                    buf = b""
                except SerialLinkError as e:
                    log.warning("serial_connect_failed", port=self._s.port, error=str(e), retry_in_s=delay)
                    if not self._down_reported:
                        self._down_reported = True
                        self._on_link(False, str(e))
                    self._stop.wait(delay)
                    delay = min(delay * 2, self._s.reconnect_max_delay_s)
                continue
            port = self._port
            try:
                chunk = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError) as e:
                self._lost(f"read failed: {e}")
                continue
            if chunk:
                self._last_rx = time.monotonic()
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._handle_line(line)
                if len(buf) > sp.MAX_LINE_BYTES:
                    log.warning("serial_garbage", bytes=len(buf))
                    buf = b""
            self._check_timeouts()

    def _connect(self) -> None:
        try:
            port = serial.Serial(
                self._s.port, self._s.baud, timeout=READ_TIMEOUT_S, write_timeout=WRITE_TIMEOUT_S, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as e:
            raise SerialLinkError(f"cannot open {self._s.port}: {e}") from None
        try:
            port.reset_input_buffer()
            banner = self._read_banner(port, self._s.handshake_timeout_s)
        except (serial.SerialException, OSError) as e:
            port.close()
            raise SerialLinkError(f"handshake failed: {e}") from None
        if banner is None:
            port.close()
            raise SerialLinkError("no banner from controller (is it a wastesort gate controller?)")
        if banner.version != self._s.protocol_version or banner.n_gates < self._gates_needed:
            port.close()
            msg = (
                f"controller speaks protocol {banner.version} with {banner.n_gates} gates; "
                f"need protocol {self._s.protocol_version} with at least {self._gates_needed} gates"
            )
            raise SerialLinkError(msg)
        try:
            self._set_servo_rest(port)
        except (serial.SerialException, OSError) as e:
            port.close()
            raise SerialLinkError(f"handshake failed: {e}") from None
        except SerialLinkError:
            port.close()
            raise
        with self._lock:
            self._port = port
            self._ping = None
        self.banner = banner
        self._down_reported = False
        self._last_rx = time.monotonic()
        log.info("serial_connected", port=self._s.port, protocol=banner.version, gates=banner.n_gates)
        self._on_link(True, f"connected to {self._s.port}")
        self._connected_evt.set()

    @staticmethod
    def _read_banner(port: serial.Serial, timeout_s: float) -> sp.Banner | None:
        """Send HELLO, repeated every HELLO_RESEND_S: boards that reset when the port opens
        (Arduino Uno/Nano/Mega, about 1.5 s of boot loader) miss the first one."""
        attempts = max(1, math.ceil(timeout_s / HELLO_RESEND_S))
        reply = SerialActuator._exchange(port, sp.encode(sp.Hello()), lambda m: isinstance(m, sp.Banner), attempts, HELLO_RESEND_S)
        return reply if isinstance(reply, sp.Banner) else None

    @staticmethod
    def _exchange(
        port: serial.Serial, line: bytes, accept: Callable[[sp.Message], bool], attempts: int, wait_s: float
    ) -> sp.Message | None:
        """Write ``line`` up to ``attempts`` times, each followed by up to ``wait_s`` of reading;
        the first decoded message that ``accept`` takes, or None. Only before the I/O thread runs."""
        buf = b""
        for _ in range(attempts):
            port.write(line)
            end = time.monotonic() + wait_s
            while time.monotonic() < end:
                buf += port.read(max(1, port.in_waiting))
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    try:
                        msg = sp.decode(raw)
                    except sp.ProtocolError:
                        continue
                    if accept(msg):
                        return msg
        return None

    def _set_servo_rest(self, port: serial.Serial) -> None:
        """Move every servo gate to its rest angle (SERVO ... 0): also the check that the controller has the
        SERVO extension and that the gate is a servo. A controller without it stays silent (unknown command)."""
        for gate, angle in sorted(self._servo_rest.items()):
            with self._lock:
                self._seq = sp.next_seq(self._seq)
                seq = self._seq
            reply = self._request(port, sp.Servo(seq, gate, angle, 0))
            if reply is None:
                raise SerialLinkError(
                    f"no answer to SERVO for gate {gate}: the controller firmware lacks the servo extension "
                    "(flash firmware/gate_controller) or gate kinds differ"
                )
            if isinstance(reply, sp.Nak):
                raise SerialLinkError(f"controller refused servo gate {gate} at {angle} deg: {reply.reason}")

    def _request(self, port: serial.Serial, msg: sp.Fire | sp.Servo) -> sp.Ack | sp.Nak | None:
        """Send ``msg`` before the I/O thread runs; resend on timeout like fire(); the ACK/NAK or None."""
        wait_s = max(self._s.ack_timeout_ms / 1000, 0.2)  # the first command after a board's boot may be slow
        reply = self._exchange(
            port, sp.encode(msg), lambda m: isinstance(m, (sp.Ack, sp.Nak)) and m.seq == msg.seq, self._s.retries + 1, wait_s
        )
        return reply if isinstance(reply, (sp.Ack, sp.Nak)) else None

    def _handle_line(self, line: bytes) -> None:
        try:
            msg = sp.decode(line)
        except sp.ProtocolError as e:
            log.warning("serial_malformed_line", error=str(e))
            return
        now = time.monotonic()
        done: ActuationResult | None = None
        with self._lock:
            match msg:
                case sp.Ack(seq) if seq in self._pending:
                    p = self._pending.pop(seq)
                    done = replace(p.result, acked=now)
                case sp.Nak(seq, reason) if seq in self._pending:
                    p = self._pending.pop(seq)
                    done = replace(p.result, error=f"nak:{reason}")
                case sp.Pong(seq) if self._ping is not None and self._ping[0] == seq:
                    self._ping = None
                case _:
                    log.debug("serial_unexpected", message=repr(msg))
        if done is not None:
            self._on_result(done)

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        finished: list[ActuationResult] = []
        lost_reason: str | None = None
        with self._lock:
            if self._port is None:
                return
            for seq, p in list(self._pending.items()):
                if now < p.deadline:
                    continue
                r = p.result
                can_retry = r.attempts <= self._s.retries and now <= p.request.due + self._s.max_late_ms / 1000
                if not can_retry:
                    del self._pending[seq]
                    finished.append(replace(r, error="ack_timeout"))
                    continue
                try:
                    self._port.write(p.line)
                except (serial.SerialException, OSError) as e:
                    lost_reason = f"write failed: {e}"
                    break
                p.result = replace(r, attempts=r.attempts + 1)
                p.deadline = now + self._s.ack_timeout_ms / 1000
            if lost_reason is None:
                lost_reason = self._heartbeat_locked(now)
        for r in finished:
            self._on_result(r)
        if lost_reason is not None:
            self._lost(lost_reason)

    def _heartbeat_locked(self, now: float) -> str | None:
        hb = self._s.heartbeat_s
        if self._ping is not None:
            if now - self._ping[1] > hb:
                return "no PONG from controller"
            return None
        if now - self._last_rx >= hb and self._port is not None:
            self._seq = sp.next_seq(self._seq)
            try:
                self._port.write(sp.encode(sp.Ping(self._seq)))
            except (serial.SerialException, OSError) as e:
                return f"write failed: {e}"
            self._ping = (self._seq, now)
        return None

    def _lost(self, reason: str) -> None:
        with self._lock:
            if self._port is None:
                return  # already handled (e.g. by fire() and the I/O thread at once)
            failed = self._drop_port_locked()
        for r in failed:
            self._on_result(r)
        self.reconnects += 1
        self._down_reported = True
        log.warning("serial_lost", port=self._s.port, reason=reason)
        self._on_link(False, reason)
        self._connected_evt.clear()  # after the callback: whoever sees "disconnected" also sees the report

    def _drop_port_locked(self, error: str = "serial_lost") -> list[ActuationResult]:
        """Close the port; return the outstanding commands as failed (caller holds the lock)."""
        failed = [replace(p.result, error=error) for p in self._pending.values()]
        self._pending.clear()
        self._ping = None
        if self._port is not None:
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass
        self._port = None
        return failed
