"""Drives the gate controller over serial: HELLO/banner check, FIRE/SERVO with ACK, retries, heartbeat,
reset detection, reconnect.

One I/O thread owns connecting, reading and timeouts; ``fire()`` is called by the
scheduler thread at the due time and only writes one line, so a slow ACK never
delays the next gate. Every connection starts with HELLO (the controller then forgets the
commands of earlier connections), a random first sequence number and, where the firmware
has it, a random session id that the heartbeat checks, so a controller reset is seen.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import serial
import structlog

from daemon import serial_protocol as sp
from daemon.actuation import ActuationRequest, ActuationResult
from daemon.noise import NoiseWatch
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
    """Sends FIRE commands; reports every outcome through ``on_result``, link changes through ``on_link``
    and controller trouble that is not a lost link (a reset, line noise) through ``on_alert``."""

    def __init__(
        self,
        settings: SerialSettings,
        gates_needed: int,
        on_result: Callable[[ActuationResult], None],
        on_link: Callable[[bool, str], None],
        servo_rest: dict[int, int] | None = None,
        on_alert: Callable[[str, str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._s = settings
        self._gates_needed = gates_needed
        self._servo_rest = dict(servo_rest or {})  # servo gate -> rest angle, set at every connect
        self._on_result = on_result
        self._on_link = on_link
        self._on_alert = on_alert
        self._rng = rng or random.Random()  # first seq and session id of each connection
        self._port: serial.Serial | None = None
        self._lock = threading.Lock()  # guards _port, _pending, _seq, _probe and writes
        self._pending: dict[int, _Pending] = {}
        self._probe: tuple[int, float] | None = None  # outstanding PING/CHECK: (seq, sent at)
        self._session: int | None = None  # None: the firmware has no SESSION/CHECK (plain PING)
        self._seq = 0
        self._last_life = 0.0  # last valid reply to one of our requests: only that proves the controller works
        self._last_probe = 0.0
        self._last_hello = float("-inf")  # a banner soon after our HELLO answers it; later, it is a reset
        self._rxbuf = b""
        self._noise = NoiseWatch()
        self._stop = threading.Event()
        self._connected_evt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serial-io", daemon=True)
        self._down_reported = False  # one serial_lost report per outage, not one per retry
        self.banner: sp.Banner | None = None
        self.reconnects = 0
        self.resets = 0  # controller resets seen while connected
        self.malformed_lines = 0

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
        while not self._stop.is_set():
            if self._port is None:
                try:
                    self._connect()
                    delay = self._s.reconnect_delay_s
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
                self._rxbuf += chunk
                while b"\n" in self._rxbuf:
                    line, self._rxbuf = self._rxbuf.split(b"\n", 1)
                    reset = self._handle_line(line)
                    if reset is not None:
                        self._resync(port, reset)
                        break
                if len(self._rxbuf) > sp.MAX_LINE_BYTES:
                    self._malformed(f"{len(self._rxbuf)} bytes without a newline")
                    self._rxbuf = b""
            self._check_timeouts()

    def _connect(self) -> None:
        try:
            port = serial.Serial(
                self._s.port, self._s.baud, timeout=READ_TIMEOUT_S, write_timeout=WRITE_TIMEOUT_S, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as e:
            raise SerialLinkError(f"cannot open {self._s.port}: {e}") from None
        try:
            banner = self._handshake(port)
        except (serial.SerialException, OSError) as e:
            port.close()
            raise SerialLinkError(f"handshake failed: {e}") from None
        except SerialLinkError:
            port.close()
            raise
        self._rxbuf = b""
        with self._lock:
            self._port = port
            self._probe = None
        self._down_reported = False
        self._last_life = self._last_probe = time.monotonic()
        log.info("serial_connected", port=self._s.port, protocol=banner.version, gates=banner.n_gates,
                 session=self._session is not None)
        self._on_link(True, f"connected to {self._s.port}")
        self._connected_evt.set()

    def _handshake(self, port: serial.Serial) -> sp.Banner:
        """HELLO and the banner check, then a fresh seq, the session and the servo rest angles.

        HELLO makes the controller forget the commands of earlier connections, and the first
        seq is random as well, so a controller that kept its state (no reset when the port
        opened) never takes a new FIRE for a retransmission of an old one (docs/serial-protocol.md).
        """
        port.reset_input_buffer()
        banner = self._read_banner(port, self._s.handshake_timeout_s)
        if banner is None:
            raise SerialLinkError("no banner from controller (is it a wastesort gate controller?)")
        if banner.version != self._s.protocol_version or banner.n_gates < self._gates_needed:
            raise SerialLinkError(
                f"controller speaks protocol {banner.version} with {banner.n_gates} gates; "
                f"need protocol {self._s.protocol_version} with at least {self._gates_needed} gates"
            )
        with self._lock:
            self._seq = self._rng.randrange(sp.MAX_SEQ) + 1
        self._session = self._open_session(port)
        self._set_servo_rest(port)
        self.banner = banner
        return banner

    def _read_banner(self, port: serial.Serial, timeout_s: float) -> sp.Banner | None:
        """Send HELLO, repeated every HELLO_RESEND_S: boards that reset when the port opens
        (Arduino Uno/Nano/Mega, about 1.5 s of boot loader) miss the first one."""
        attempts = max(1, math.ceil(timeout_s / HELLO_RESEND_S))
        reply = self._exchange(port, sp.encode(sp.Hello()), lambda m: isinstance(m, sp.Banner), attempts, HELLO_RESEND_S)
        self._last_hello = time.monotonic()
        return reply if isinstance(reply, sp.Banner) else None

    @staticmethod
    def _exchange(
        port: serial.Serial, line: bytes, accept: Callable[[sp.Message], bool], attempts: int, wait_s: float
    ) -> sp.Message | None:
        """Write ``line`` up to ``attempts`` times, each followed by up to ``wait_s`` of reading;
        the first decoded message that ``accept`` takes, or None. Only while the I/O thread is not reading."""
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

    def _open_session(self, port: serial.Serial) -> int | None:
        """SESSION with a random id; the heartbeat's CHECK then tells a reset controller (it lost the id).
        Firmware without the extension stays silent: plain PING then, and only its banner shows a reset."""
        session = self._rng.randrange(sp.MAX_SEQ) + 1
        with self._lock:
            self._seq = sp.next_seq(self._seq)
            seq = self._seq
        reply = self._request(port, sp.Session(seq, session))
        if isinstance(reply, sp.Ack):
            return session
        log.warning("serial_no_session_extension", port=self._s.port, reply=repr(reply),
                    why="the controller cannot report a silent reset; flash firmware/gate_controller")
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

    def _request(self, port: serial.Serial, msg: sp.Fire | sp.Servo | sp.Session) -> sp.Ack | sp.Nak | None:
        """Send ``msg`` during the handshake; resend on timeout like fire(); the ACK/NAK or None."""
        wait_s = max(self._s.ack_timeout_ms / 1000, 0.2)  # the first command after a board's boot may be slow
        reply = self._exchange(
            port, sp.encode(msg), lambda m: isinstance(m, (sp.Ack, sp.Nak)) and m.seq == msg.seq, self._s.retries + 1, wait_s
        )
        return reply if isinstance(reply, (sp.Ack, sp.Nak)) else None

    def _handle_line(self, line: bytes) -> str | None:
        """Act on one received line; returns why the controller must be reset-handled, else None."""
        try:
            msg = sp.decode(line)
        except sp.ProtocolError as e:
            self._malformed(str(e))
            return None
        now = time.monotonic()
        done: ActuationResult | None = None
        reset: str | None = None
        with self._lock:
            probe_seq = self._probe[0] if self._probe is not None else None
            match msg:
                case sp.Ack(seq) if seq in self._pending:
                    p = self._pending.pop(seq)
                    done = replace(p.result, acked=now)
                    self._last_life = now
                case sp.Nak(seq, reason) if seq in self._pending:
                    p = self._pending.pop(seq)
                    done = replace(p.result, error=f"nak:{reason}")
                    self._last_life = now
                case sp.Pong(seq) if seq == probe_seq:
                    self._probe = None
                    self._last_life = now
                case sp.Nak(seq, reason) if seq == probe_seq:
                    self._probe = None
                    self._last_life = now
                    if reason == sp.NAK_NO_SESSION:
                        reset = "the controller lost its session (a reset without a banner)"
                    else:
                        log.warning("serial_check_refused", reason=reason)
                case sp.Banner() if now - self._last_hello > HELLO_RESEND_S:
                    reset = "the controller sent its banner unprompted (it restarted)"
                case _:
                    log.debug("serial_unexpected", message=repr(msg))
        if done is not None:
            self._on_result(done)
        return reset

    def _malformed(self, error: str) -> None:
        """Count a malformed line; log a few, alert once per noisy spell (NoiseWatch)."""
        self.malformed_lines += 1
        v = self._noise.record(time.monotonic())
        if v.log:
            log.warning("serial_malformed_line", error=error, not_logged_before=v.suppressed,
                        total=self.malformed_lines)
        if v.alert:
            self._alert("serial_noise", f"at least {v.recent} malformed lines from the controller within "
                        f"{self._noise.window_s:g} s ({self.malformed_lines} in total): check cable, ground, "
                        "baud rate; commands may need retries")

    def _alert(self, kind: str, message: str) -> None:
        if self._on_alert is not None:
            self._on_alert(kind, message)

    def _resync(self, port: serial.Serial, reason: str) -> None:
        """The controller reset while connected: its RAM (remembered commands, servo rest angles,
        session) is gone. Fail what was in flight, say HELLO again and restore the servos, on the same port."""
        with self._lock:
            if self._port is not port:
                return
            failed = [replace(p.result, error="controller_reset") for p in self._pending.values()]
            self._pending.clear()
            self._probe = None
            self._port = None  # fire() reports serial_down for the few ms of the handshake
        self.resets += 1
        for r in failed:
            self._on_result(r)
        log.warning("controller_reset", port=self._s.port, reason=reason, failed=len(failed))
        try:
            self._handshake(port)
        except (SerialLinkError, serial.SerialException, OSError) as e:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass
            self._alert("controller_reset", f"{reason}; the new handshake failed: {e}")
            self.reconnects += 1
            self._down_reported = True
            log.warning("serial_lost", port=self._s.port, reason=f"handshake after reset: {e}")
            self._on_link(False, f"handshake after controller reset failed: {e}")
            self._connected_evt.clear()
            return
        self._rxbuf = b""
        self._last_life = self._last_probe = time.monotonic()
        with self._lock:
            self._port = port
        restored = f", servo rest angles restored ({len(self._servo_rest)})" if self._servo_rest else ""
        self._alert("controller_reset", f"{reason}: handshake repeated{restored}; "
                    f"{len(failed)} command(s) in flight reported controller_reset")

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
        """A probe (CHECK with the session, else PING) every heartbeat_s, busy or not, so a reset is seen
        within about heartbeat_s. Only valid replies count as life: line noise keeps nothing alive."""
        hb = self._s.heartbeat_s
        if self._probe is not None:
            if now - self._probe[1] <= hb:
                return None
            if now - self._last_life > hb:
                return f"no PONG from controller for {hb:g} s (nor any other valid reply)"
            self._probe = None  # this probe was lost, but the controller answers other commands
        if now - self._last_probe < hb or self._port is None:
            return None
        self._seq = sp.next_seq(self._seq)
        probe = sp.Ping(self._seq) if self._session is None else sp.Check(self._seq, self._session)
        try:
            self._port.write(sp.encode(probe))
        except (serial.SerialException, OSError) as e:
            return f"write failed: {e}"
        self._probe = (self._seq, now)
        self._last_probe = now
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
        self._probe = None
        if self._port is not None:
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass
        self._port = None
        return failed
