"""Line protocol between the daemon and the gate controller (see docs/serial-protocol.md).

Every line is ``<BODY>*<CRC>\\n``: BODY is ASCII words separated by single spaces,
CRC is the CRC-8 (poly 0x07, init 0x00, no reflection; "CRC-8/SMBUS") of the BODY
bytes as two upper-case hex digits. This module only encodes and decodes; it does
no I/O so that both ends (daemon and simulator) share exactly one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = 1
BANNER_WORD = "WASTESORT-GATE"
MAX_LINE_BYTES = 128
MAX_SEQ = 65535
MAX_ANGLE_FIELD = 999  # an angle word decodes up to here; the controller NAKs what its servo cannot reach
SERVO_MAX_DEG = 180  # servo range: SERVO with an angle above it gets NAK bad_angle
NAK_NO_SESSION = "no_session"  # CHECK for a session the controller does not hold: it was reset
NAK_BAD_SESSION = "bad_session"  # SESSION 0: not a session id


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8/SMBUS (poly 0x07, init 0); check value for b"123456789" is 0xF4."""
    crc = 0
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


class ProtocolError(ValueError):
    """A line that does not follow the grammar or fails its checksum."""


@dataclass(frozen=True)
class Hello:
    """Daemon -> controller: ask for the banner."""


@dataclass(frozen=True)
class Banner:
    """Controller -> daemon: ``WASTESORT-GATE <proto_version> <n_gates>``."""

    version: int
    n_gates: int


@dataclass(frozen=True)
class Fire:
    """Daemon -> controller: open ``gate`` for ``duration_ms`` now."""

    seq: int
    gate: int
    duration_ms: int


@dataclass(frozen=True)
class Servo:
    """Daemon -> controller (extension of version 1): move servo ``gate`` to ``angle_deg``.

    ``hold_ms`` > 0: return to the rest angle after that long (a servo gate's actuation);
    ``hold_ms`` = 0: stay, and make ``angle_deg`` the gate's rest angle (jog; set at connect).
    """

    seq: int
    gate: int
    angle_deg: int
    hold_ms: int


@dataclass(frozen=True)
class Session:
    """Daemon -> controller (extension of version 1): this connection is ``session`` (1..MAX_SEQ).

    The controller keeps it in RAM only, so a controller that reset has none; ``Check`` asks for it.
    """

    seq: int
    session: int


@dataclass(frozen=True)
class Check:
    """Daemon -> controller (extension): heartbeat that also proves the controller did not reset.

    Reply ``PONG <seq>`` when the controller holds ``session``, else ``NAK <seq> no_session``.
    """

    seq: int
    session: int


@dataclass(frozen=True)
class Ping:
    seq: int


@dataclass(frozen=True)
class Pong:
    seq: int


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Nak:
    seq: int
    reason: str


Message = Hello | Banner | Fire | Servo | Session | Check | Ping | Pong | Ack | Nak


def _body(msg: Message) -> str:
    match msg:
        case Hello():
            return "HELLO"
        case Banner(version, n_gates):
            return f"{BANNER_WORD} {version} {n_gates}"
        case Fire(seq, gate, duration_ms):
            return f"FIRE {seq} {gate} {duration_ms}"
        case Servo(seq, gate, angle_deg, hold_ms):
            return f"SERVO {seq} {gate} {angle_deg} {hold_ms}"
        case Session(seq, session):
            return f"SESSION {seq} {session}"
        case Check(seq, session):
            return f"CHECK {seq} {session}"
        case Ping(seq):
            return f"PING {seq}"
        case Pong(seq):
            return f"PONG {seq}"
        case Ack(seq):
            return f"ACK {seq}"
        case Nak(seq, reason):
            if not reason or not all(c.isalnum() or c == "_" for c in reason):
                raise ValueError(f"NAK reason must be a single word of [A-Za-z0-9_], got {reason!r}")
            return f"NAK {seq} {reason}"
    raise TypeError(f"not a protocol message: {msg!r}")


def encode(msg: Message) -> bytes:
    """The wire form of ``msg`` including checksum and newline."""
    body = _body(msg).encode("ascii")
    return body + b"*%02X\n" % crc8(body)


def _uint(word: str, name: str, maximum: int) -> int:
    if not word.isdigit() or len(word) > 6:
        raise ProtocolError(f"{name} must be a decimal integer, got {word!r}")
    value = int(word)
    if value > maximum:
        raise ProtocolError(f"{name} {value} out of range 0..{maximum}")
    return value


def decode(line: bytes) -> Message:
    """Parse one line (with or without its trailing newline); raise ProtocolError if malformed."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line too long ({len(line)} bytes)")
    raw = line.rstrip(b"\r\n")
    star = raw.rfind(b"*")
    if star < 0:
        raise ProtocolError(f"missing checksum in {raw!r}")
    body, crc_hex = raw[:star], raw[star + 1 :]
    if len(crc_hex) != 2:
        raise ProtocolError(f"checksum must be 2 hex digits in {raw!r}")
    try:
        got = int(crc_hex, 16)
        text = body.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"non-ASCII or bad checksum digits in {raw!r}") from None
    if got != crc8(body):
        raise ProtocolError(f"checksum mismatch in {raw!r}: expected {crc8(body):02X}")
    words = text.split(" ")
    if any(not w for w in words):
        raise ProtocolError(f"empty word (double or trailing space) in {raw!r}")
    head, args = words[0], words[1:]
    arity = {"HELLO": 0, BANNER_WORD: 2, "FIRE": 3, "SERVO": 4, "SESSION": 2, "CHECK": 2, "PING": 1, "PONG": 1, "ACK": 1, "NAK": 2}
    if head not in arity:
        raise ProtocolError(f"unknown command {head!r}")
    if len(args) != arity[head]:
        raise ProtocolError(f"{head} takes {arity[head]} argument(s), got {len(args)}")
    if head == "HELLO":
        return Hello()
    if head == BANNER_WORD:
        return Banner(_uint(args[0], "version", 999), _uint(args[1], "n_gates", 255))
    seq = _uint(args[0], "seq", MAX_SEQ)
    if head == "FIRE":
        return Fire(seq, _uint(args[1], "gate", 255), _uint(args[2], "duration_ms", 10_000))
    if head == "SERVO":
        return Servo(seq, _uint(args[1], "gate", 255), _uint(args[2], "angle_deg", MAX_ANGLE_FIELD),
                     _uint(args[3], "hold_ms", 10_000))
    if head == "SESSION":
        return Session(seq, _uint(args[1], "session", MAX_SEQ))
    if head == "CHECK":
        return Check(seq, _uint(args[1], "session", MAX_SEQ))
    if head == "PING":
        return Ping(seq)
    if head == "PONG":
        return Pong(seq)
    if head == "ACK":
        return Ack(seq)
    return Nak(seq, args[1])


def next_seq(seq: int) -> int:
    """Sequence numbers run 1..MAX_SEQ and wrap (0 is never sent)."""
    return 1 if seq >= MAX_SEQ else seq + 1
