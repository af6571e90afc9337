"""The serial line protocol codec: checksum, round trips and malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import serial_protocol as sp
from daemon.sim_controller import SimController


def test_crc8_matches_the_published_check_value() -> None:
    # CRC-8/SMBUS check value (poly 0x07, init 0) for "123456789" is 0xF4.
    assert sp.crc8(b"123456789") == 0xF4
    assert sp.crc8(b"") == 0


@pytest.mark.parametrize(
    "msg",
    [sp.Hello(), sp.Banner(1, 4), sp.Fire(1, 2, 80), sp.Fire(65535, 255, 10000), sp.Ping(7), sp.Pong(7),
     sp.Ack(42), sp.Nak(42, "bad_gate"), sp.Servo(3, 4, 135, 120), sp.Servo(65535, 255, 999, 10000),
     sp.Servo(1, 1, 0, 0), sp.Nak(3, "not_servo"), sp.Session(9, 65535), sp.Check(10, 1),
     sp.Nak(10, sp.NAK_NO_SESSION)],
)
def test_every_message_round_trips(msg: sp.Message) -> None:
    wire = sp.encode(msg)
    assert wire.endswith(b"\n") and wire.count(b"\n") == 1
    assert sp.decode(wire) == msg


def test_exact_wire_format_of_servo() -> None:
    body = b"SERVO 12 4 135 120"
    assert sp.encode(sp.Servo(12, 4, 135, 120)) == body + b"*%02X\n" % sp.crc8(body)


def test_simulator_keeps_servo_angles_and_naks_bad_ones(tmp_path) -> None:
    sim = SimController(tmp_path / "link", n_gates=4, servo_gates={2, 4})
    try:
        assert sim.handle_line(sp.encode(sp.Servo(1, 4, 30, 0))) == sp.Ack(1)  # new rest angle
        assert sim.handle_line(sp.encode(sp.Servo(2, 4, 120, 80))) == sp.Ack(2)  # a bin pulse
        assert sim.handle_line(sp.encode(sp.Servo(2, 4, 120, 80))) == sp.Ack(2)  # retransmission: no new move
        assert sim.handle_line(sp.encode(sp.Servo(3, 1, 45, 0))) == sp.Nak(3, "not_servo")
        assert sim.handle_line(sp.encode(sp.Servo(4, 2, 181, 0))) == sp.Nak(4, "bad_angle")
        assert sim.handle_line(sp.encode(sp.Servo(5, 5, 45, 0))) == sp.Nak(5, "bad_gate")
        assert sim.rest_angles == {2: 0, 4: 30} and sim.angles == {2: 0, 4: 120}
        assert [(m.gate, m.angle_deg, m.hold_ms) for m in sim.moves] == [(4, 30, 0), (4, 120, 80)]
        assert sim.fires == []
    finally:
        sim.stop()


def test_exact_wire_format_of_fire() -> None:
    body = b"FIRE 12 3 80"
    assert sp.encode(sp.Fire(12, 3, 80)) == body + b"*%02X\n" % sp.crc8(body)
    assert sp.encode(sp.Banner(1, 4)).startswith(b"WASTESORT-GATE 1 4*")


@pytest.mark.parametrize(
    "line, fragment",
    [
        (b"FIRE 1 2 80", "missing checksum"),
        (b"FIRE 1 2 80*00", "checksum mismatch"),
        (b"FIRE 1 2 80*5", "2 hex digits"),
        (b"FIRE 1 2 80*ZZ", "bad checksum digits"),
        (b"\xff\xfe", "missing checksum"),
    ],
)
def test_bad_checksums_are_rejected(line: bytes, fragment: str) -> None:
    with pytest.raises(sp.ProtocolError, match=fragment):
        sp.decode(line)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"JUMP 1", "unknown command"),
        (b"FIRE 1 2", "takes 3 argument"),
        (b"FIRE x 2 80", "seq must be a decimal"),
        (b"FIRE 1 -2 80", "gate must be a decimal"),
        (b"FIRE 70000 2 80", "out of range"),
        (b"FIRE  1 2 80", "empty word"),
        (b"HELLO ", "empty word"),
        (b"SERVO 1 2 45", "takes 4 argument"),
        (b"SERVO 1 2 45 0 7", "takes 4 argument"),
        (b"SERVO 1 2 1000 0", "angle_deg 1000 out of range"),
        (b"SERVO 1 2 -5 0", "angle_deg must be a decimal"),
        (b"SERVO 1 2 45 10001", "hold_ms 10001 out of range"),
        (b"SERVO 1 256 45 0", "gate 256 out of range"),
        (b"servo 1 2 45 0", "unknown command"),
    ],
)
def test_grammar_errors_are_rejected_even_with_a_valid_checksum(body: bytes, fragment: str) -> None:
    with pytest.raises(sp.ProtocolError, match=fragment):
        sp.decode(body + b"*%02X\n" % sp.crc8(body))


def test_corrupted_byte_is_caught_by_the_checksum() -> None:
    wire = bytearray(sp.encode(sp.Fire(5, 2, 80)))
    wire[5] = ord("6")  # seq 5 -> 6 in transit
    with pytest.raises(sp.ProtocolError, match="checksum"):
        sp.decode(bytes(wire))


def test_overlong_line_is_rejected() -> None:
    with pytest.raises(sp.ProtocolError, match="too long"):
        sp.decode(b"PING 1" + b" " * 200)


def test_nak_reason_must_be_one_word() -> None:
    with pytest.raises(ValueError):
        sp.encode(sp.Nak(1, "two words"))


def test_sequence_numbers_wrap_and_skip_zero() -> None:
    assert sp.next_seq(1) == 2
    assert sp.next_seq(sp.MAX_SEQ) == 1


def test_simulator_answers_the_grammar(tmp_path) -> None:
    sim = SimController(tmp_path / "link", n_gates=3)
    try:
        assert sim.handle_line(sp.encode(sp.Hello())) == sp.Banner(sp.PROTOCOL_VERSION, 3)
        assert sim.handle_line(sp.encode(sp.Ping(9))) == sp.Pong(9)
        assert sim.handle_line(sp.encode(sp.Fire(1, 2, 80))) == sp.Ack(1)
        assert sim.handle_line(sp.encode(sp.Fire(2, 4, 80))) == sp.Nak(2, "bad_gate")
        # A retransmission of seq 1 is acknowledged again but does not fire twice.
        assert sim.handle_line(sp.encode(sp.Fire(1, 2, 80))) == sp.Ack(1)
        assert [(f.seq, f.gate) for f in sim.fires] == [(1, 2)]
        assert sim.handle_line(b"FIRE 3 1 80*00") is None
        assert sim.malformed == 1
    finally:
        sim.stop()


def test_hello_starts_a_new_connection_so_old_sequence_numbers_fire_again(tmp_path) -> None:
    """A controller that kept its state over a daemon restart must not take the new FIREs for retransmissions."""
    sim = SimController(tmp_path / "link", n_gates=4)
    try:
        for _ in range(2):  # two daemon runs, each starting with HELLO and the same sequence numbers
            assert sim.handle_line(sp.encode(sp.Hello())) == sp.Banner(sp.PROTOCOL_VERSION, 4)
            assert sim.handle_line(sp.encode(sp.Fire(1, 3, 80))) == sp.Ack(1)
            assert sim.handle_line(sp.encode(sp.Fire(1, 3, 80))) == sp.Ack(1)  # a retransmission within the run
        assert [(f.seq, f.gate) for f in sim.fires] == [(1, 3), (1, 3)]
    finally:
        sim.stop()


def test_session_survives_hello_but_not_a_reset(tmp_path) -> None:
    sim = SimController(tmp_path / "link", n_gates=4, servo_gates={4})
    try:
        assert sim.handle_line(sp.encode(sp.Check(1, 9))) == sp.Nak(1, sp.NAK_NO_SESSION)
        assert sim.handle_line(sp.encode(sp.Session(2, 0))) == sp.Nak(2, sp.NAK_BAD_SESSION)
        assert sim.handle_line(sp.encode(sp.Session(3, 9))) == sp.Ack(3)
        assert sim.handle_line(sp.encode(sp.Check(4, 9))) == sp.Pong(4)
        assert sim.handle_line(sp.encode(sp.Check(5, 8))) == sp.Nak(5, sp.NAK_NO_SESSION)
        assert sim.handle_line(sp.encode(sp.Hello())) is not None
        assert sim.handle_line(sp.encode(sp.Check(6, 9))) == sp.Pong(6)
        assert sim.handle_line(sp.encode(sp.Servo(7, 4, 30, 0))) == sp.Ack(7)
        sim.reset(announce=False)
        assert sim.handle_line(sp.encode(sp.Check(8, 9))) == sp.Nak(8, sp.NAK_NO_SESSION)
        assert sim.rest_angles == {4: 0}  # the rest angle was RAM too
    finally:
        sim.stop()


def test_every_example_line_in_the_protocol_document_is_exact() -> None:
    """The documented bytes (with their checksums) are what the codec sends and accepts."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "serial-protocol.md").read_text()
    lines = [ln[2:].split("  ")[0].strip() for ln in doc.splitlines() if ln.startswith(("> ", "< "))]
    assert len(lines) >= 20
    for line in lines:
        msg = sp.decode(line.encode())
        assert sp.encode(msg) == line.encode() + b"\n"
