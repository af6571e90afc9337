"""The reference firmware speaks exactly the daemon's protocol.

1. Constants marked in firmware/gate_controller/protocol.h (command names, banner, NAK codes,
   limits, CRC parameters) against daemon/serial_protocol.py and daemon/sim_controller.py.
2. protocol.h compiled with g++ and fed the same lines as the Python simulator: replies,
   malformed counts and actuations must be identical, line for line.
3. gate_controller.ino compiled against a small Arduino stand-in and driven through
   setup()/loop(): serial in, reply out, pins switched and released on time.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import typing
from pathlib import Path

import pytest

from daemon import serial_protocol as sp
from daemon.sim_controller import SimController

REPO = Path(__file__).resolve().parent.parent
FW = REPO / "firmware" / "gate_controller"
PROTOCOL_H = FW / "protocol.h"
INO = FW / "gate_controller.ino"
CONFIG_H = FW / "config.h"

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")


def marked_constants() -> dict[str, str | int]:
    text = PROTOCOL_H.read_text()
    block = re.search(r"// @protocol-constants begin.*?\n(.*?)// @protocol-constants end", text, re.S)
    assert block, "protocol.h lost its @protocol-constants markers"
    out: dict[str, str | int] = {}
    for name, value in re.findall(r"static const \w+ (\w+)(?:\[\])? = (.+?);", block.group(1)):
        out[name] = value.strip('"') if value.startswith('"') else int(value, 0)
    return out


def crc8_generic(data: bytes, poly: int, init: int) -> int:
    crc = init
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def test_marked_constants_match_the_python_protocol() -> None:
    c = marked_constants()
    assert c["PROTOCOL_VERSION"] == sp.PROTOCOL_VERSION
    assert c["BANNER_WORD"] == sp.BANNER_WORD
    assert c["MAX_LINE_BYTES"] == sp.MAX_LINE_BYTES and c["MAX_SEQ"] == sp.MAX_SEQ

    # Command words: the head word of every message type the Python codec knows.
    samples = {sp.Hello: sp.Hello(), sp.Banner: sp.Banner(1, 4), sp.Fire: sp.Fire(1, 2, 3),
               sp.Servo: sp.Servo(1, 2, 3, 4), sp.Session: sp.Session(1, 2), sp.Check: sp.Check(1, 2),
               sp.Ping: sp.Ping(1), sp.Pong: sp.Pong(1), sp.Ack: sp.Ack(1), sp.Nak: sp.Nak(1, "x")}
    assert set(typing.get_args(sp.Message)) == set(samples)
    python_words = {sp.encode(m).split(b"*")[0].split(b" ")[0].decode() for m in samples.values()}
    firmware_words = {v for k, v in c.items() if k.startswith("CMD_")} | {c["BANNER_WORD"]}
    assert firmware_words == python_words

    # Error codes: every NAK reason the simulator sends.
    sim_reasons = set(re.findall(r'sp\.Nak\(\w+, "(\w+)"\)', (REPO / "daemon" / "sim_controller.py").read_text()))
    assert sim_reasons and {v for k, v in c.items() if k.startswith("NAK_")} == sim_reasons
    assert {sp.NAK_NO_SESSION, sp.NAK_BAD_SESSION} <= sim_reasons

    # Numeric limits, as the Python decoder enforces them.
    def ok(line: str) -> bool:
        try:
            sp.decode(line.encode() + b"*%02X" % sp.crc8(line.encode()))
            return True
        except sp.ProtocolError:
            return False

    assert ok(f"FIRE 1 1 {c['MAX_DURATION_MS']}") and not ok(f"FIRE 1 1 {c['MAX_DURATION_MS'] + 1}")
    assert ok(f"FIRE 1 {c['MAX_GATE']} 1") and not ok(f"FIRE 1 {c['MAX_GATE'] + 1} 1")
    assert ok(f"FIRE {c['MAX_SEQ']} 1 1") and not ok(f"FIRE {c['MAX_SEQ'] + 1} 1 1")
    assert ok(f"SESSION 1 {c['MAX_SEQ']}") and not ok(f"CHECK 1 {c['MAX_SEQ'] + 1}")
    assert ok(f"SERVO 1 1 {c['MAX_ANGLE_FIELD']} 0") and not ok(f"SERVO 1 1 {c['MAX_ANGLE_FIELD'] + 1} 0")
    assert ok(f"SERVO 1 1 0 {c['MAX_DURATION_MS']}") and not ok(f"SERVO 1 1 0 {c['MAX_DURATION_MS'] + 1}")
    assert c["SERVO_MAX_DEG"] == sp.SERVO_MAX_DEG
    assert ok(f"{sp.BANNER_WORD} {c['MAX_VERSION']} {c['MAX_N_GATES']}")
    assert not ok(f"{sp.BANNER_WORD} {c['MAX_VERSION'] + 1} 1") and not ok(f"{sp.BANNER_WORD} 1 {c['MAX_N_GATES'] + 1}")
    digits = int(c["MAX_NUMBER_DIGITS"])
    assert ok("PING " + "0" * (digits - 1) + "1") and not ok("PING " + "0" * digits + "1")

    # Checksum: the marked parameters reproduce the Python CRC, check value included.
    assert crc8_generic(b"123456789", int(c["CRC8_POLY"]), int(c["CRC8_INIT"])) == sp.crc8(b"123456789") == 0xF4
    rng = random.Random(1)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        assert crc8_generic(data, int(c["CRC8_POLY"]), int(c["CRC8_INIT"])) == sp.crc8(data)


def test_sketch_uses_the_shared_protocol_and_a_consistent_config() -> None:
    ino = INO.read_text()
    assert '#include "protocol.h"' in ino and "ws::Controller" in ino and "ws::PROTOCOL_VERSION" in ino
    assert sp.BANNER_WORD not in ino and "crc" not in ino.lower()  # nothing re-implemented in the sketch
    cfg = CONFIG_H.read_text()
    n = int(re.search(r"#define WS_N_GATES (\d+)", cfg).group(1))  # type: ignore[union-attr]
    body = re.search(r"GATES\[WS_N_GATES\] = \{(.*?)\n\};", cfg, re.S).group(1)  # type: ignore[union-attr]
    assert len(re.findall(r"\{GATE_(SOLENOID|SERVO),", body)) == n
    assert int(re.search(r"#define WS_BAUD (\d+)", cfg).group(1)) == 115200  # type: ignore[union-attr]


# --- compiled protocol.h against the Python simulator -------------------------------------------
@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    exe = tmp_path_factory.mktemp("fw") / "protocol_harness"
    cmd = ["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-o", str(exe),
           str(FW / "host_test" / "protocol_harness.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return exe


def run_harness(exe: Path, commands: list[str], n_gates: int = 4, version: int = 1,
                servo_gates: tuple[int, ...] = ()) -> list[str]:
    argv = [str(exe), str(n_gates), str(version)] + ([",".join(map(str, servo_gates))] if servo_gates else [])
    proc = subprocess.run(argv, input="".join(c + "\n" for c in commands),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def with_crc(body: bytes) -> bytes:
    return body + b"*%02X" % sp.crc8(body)


def handwritten_vectors() -> list[bytes]:
    long_reason = b"x" * (sp.MAX_LINE_BYTES - len(b"NAK 1 *00"))
    return [
        sp.encode(sp.Hello()).rstrip(b"\n"),
        sp.encode(sp.Ping(7)).rstrip(b"\n"),
        sp.encode(sp.Fire(1, 3, 80)).rstrip(b"\n"),
        sp.encode(sp.Fire(1, 3, 80)).rstrip(b"\n"),  # retransmission: ACK, no second actuation
        sp.encode(sp.Fire(1, 2, 80)).rstrip(b"\n"),  # same seq, other gate: a new command
        sp.encode(sp.Hello()).rstrip(b"\n"),  # a new connection (a restarted daemon starts its seqs anew)...
        sp.encode(sp.Fire(1, 3, 80)).rstrip(b"\n"),  # ...so this fires again: not a retransmission
        sp.encode(sp.Fire(1, 3, 80)).rstrip(b"\n"),  # but its own repeat is one
        # Session extension: CHECK answers PONG only for the session set since boot.
        sp.encode(sp.Check(50, 7)).rstrip(b"\n"),  # none yet (a reset board): NAK no_session
        sp.encode(sp.Session(51, 0)).rstrip(b"\n"),  # NAK bad_session
        sp.encode(sp.Check(52, 0)).rstrip(b"\n"),  # 0 is never a session
        sp.encode(sp.Session(53, 7)).rstrip(b"\n"),  # ACK
        sp.encode(sp.Check(54, 7)).rstrip(b"\n"),  # PONG
        sp.encode(sp.Check(55, 8)).rstrip(b"\n"),  # another session: NAK no_session
        sp.encode(sp.Hello()).rstrip(b"\n"),  # HELLO keeps the session (only a reset loses it)
        sp.encode(sp.Check(56, 7)).rstrip(b"\n"),
        with_crc(b"SESSION 57"),
        with_crc(b"SESSION 58 1 2"),
        with_crc(b"CHECK 59 65536"),
        with_crc(b"CHECK 60 -1"),
        sp.encode(sp.Fire(2, 7, 80)).rstrip(b"\n"),  # NAK bad_gate
        with_crc(b"FIRE 3 0 80"),  # gate 0: NAK bad_gate
        with_crc(b"FIRE 4 256 80"),  # beyond 255: malformed
        with_crc(b"FIRE 65535 4 10000"),
        with_crc(b"FIRE 65536 4 10"),
        with_crc(b"FIRE 5 1 10001"),
        with_crc(b"FIRE 0 1 0"),
        with_crc(b"FIRE 000006 01 0080"),  # leading zeros are numbers too
        with_crc(b"FIRE 0000007 1 80"),  # 7 digits
        with_crc(b"FIRE 8 1"),
        with_crc(b"FIRE 8 1 80 9"),
        with_crc(b"FIRE  9 1 80"),
        with_crc(b"FIRE 9 1 80 "),
        with_crc(b" HELLO"),
        with_crc(b""),
        with_crc(b"hello"),
        with_crc(b"HELLO 1"),
        with_crc(b"RESET"),
        with_crc(b"FIRE 10 -1 80"),
        with_crc(b"FIRE 11 1 8a"),
        with_crc(b"FI*RE 12 1 80"),
        with_crc(b"NAK 3 b@d"),  # the decoder takes any reason word
        with_crc(b"NAK 3"),
        with_crc(b"ACK 3"),
        with_crc(b"PONG 3"),
        with_crc(sp.BANNER_WORD.encode() + b" 1 4"),
        with_crc(sp.BANNER_WORD.encode() + b" 1"),
        with_crc(b"PING 12") + b"\r",  # CR before the newline is tolerated
        with_crc(b"PING 13") + b"\r\r",
        with_crc(b"PING 14").lower(),  # lower-case everything: unknown command
        b"PING 15*" + (b"%02x" % sp.crc8(b"PING 15")),  # lower-case checksum digits are fine
        b"PING 16*00",
        b"PING 17",
        b"PING 18*ABC",
        b"PING 19*G0",
        b"PING 2\xff*" + b"%02X" % sp.crc8(b"PING 2\xff"),
        b"PING\x00 20*" + b"%02X" % sp.crc8(b"PING\x00 20"),
        b"",
        with_crc(b"NAK 1 " + long_reason),  # exactly 128 bytes: valid (a reply, so no answer)
        with_crc(b"NAK 1 " + long_reason + b"x"),  # 129 bytes: too long
        sp.encode(sp.Fire(21, 4, 120)).rstrip(b"\n"),
        # SERVO extension: rest (hold 0), a bin pulse, retransmission, every NAK, grammar limits.
        sp.encode(sp.Servo(30, 2, 10, 0)).rstrip(b"\n"),
        sp.encode(sp.Servo(31, 2, 135, 200)).rstrip(b"\n"),
        sp.encode(sp.Servo(31, 2, 135, 200)).rstrip(b"\n"),  # retransmission: ACK, no second move
        sp.encode(sp.Servo(31, 2, 90, 200)).rstrip(b"\n"),  # same seq, other angle: a new command
        sp.encode(sp.Fire(31, 2, 200)).rstrip(b"\n"),  # same seq and numbers, but FIRE: a new command
        sp.encode(sp.Servo(32, 1, 45, 0)).rstrip(b"\n"),  # gate 1 is a solenoid: NAK not_servo
        sp.encode(sp.Servo(33, 2, 181, 0)).rstrip(b"\n"),  # beyond the servo's range: NAK bad_angle
        sp.encode(sp.Servo(34, 2, 180, 10000)).rstrip(b"\n"),
        sp.encode(sp.Servo(35, 9, 45, 0)).rstrip(b"\n"),  # NAK bad_gate
        with_crc(b"SERVO 36 0 45 0"),  # gate 0: NAK bad_gate
        with_crc(b"SERVO 37 2 1000 0"),  # 4 digits: malformed
        with_crc(b"SERVO 38 2 45 10001"),
        with_crc(b"SERVO 39 2 45"),
        with_crc(b"SERVO 39 2 45 0 1"),
        with_crc(b"SERVO 40 2 -5 0"),
        with_crc(b"SERVO 0041 02 045 00"),
        with_crc(b"servo 42 2 45 0"),
    ]


def fuzz_vectors(n: int, seed: int = 5) -> list[bytes]:
    """Random bodies built from the grammar's pieces, mostly with a correct checksum."""
    rng = random.Random(seed)
    heads = ["HELLO", "FIRE", "PING", "PONG", "ACK", "NAK", sp.BANNER_WORD, "FIRE", "FIRE", "fire", "XYZ", "",
             "SERVO", "SERVO", "SESSION", "CHECK"]
    words = ["1", "2", "3", "4", "5", "0", "80", "10000", "10001", "255", "256", "65535", "65536", "007",
             "1234567", "bad_gate", "a", "-1", "1.5", "", "12", "180", "181", "999", "1000"]
    out = []
    for _ in range(n):
        if rng.random() < 0.3:  # well-formed FIRE with few distinct seqs: exercises retransmission handling
            if rng.random() < 0.5:
                body = f"FIRE {rng.randrange(1, 12)} {rng.randrange(0, 6)} {rng.choice([0, 40, 80])}".encode()
            else:
                body = (f"SERVO {rng.randrange(1, 12)} {rng.randrange(0, 6)} {rng.choice([0, 90, 180, 181])} "
                        f"{rng.choice([0, 80])}").encode()
            out.append(body + b"*%02X" % sp.crc8(body))
            continue
        parts = [rng.choice(heads)] + [rng.choice(words) for _ in range(rng.randrange(5))]
        body = (" " if rng.random() < 0.9 else "  ").join(parts).encode()
        if rng.random() < 0.05:
            body += b" "
        crc = sp.crc8(body) if rng.random() < 0.9 else rng.randrange(256)
        out.append(body + b"*%02X" % crc)
    return out


@needs_gxx
def test_crc_matches_the_python_codec(harness: Path) -> None:
    rng = random.Random(2)
    data = [b"123456789", b"", b"\x00", b"\xff" * 9] + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
                                                         for _ in range(300)]
    got = run_harness(harness, ["C " + d.hex().upper() for d in data])
    assert got == [f"C {sp.crc8(d):02X}" for d in data]


@pytest.mark.parametrize("n_gates, version, servo_gates", [(4, 1, (2, 4)), (2, 3, ()), (3, 1, (1, 2, 3))])
@needs_gxx
def test_controller_replies_line_for_line_like_the_simulator(harness: Path, tmp_path: Path, n_gates: int,
                                                             version: int, servo_gates: tuple[int, ...]) -> None:
    lines = handwritten_vectors() + fuzz_vectors(600)
    sim = SimController(tmp_path / "gate", n_gates=n_gates, version=version, servo_gates=set(servo_gates))
    try:
        expected = []
        for line in lines:
            reply = sim.handle_line(line)
            reply_hex = sp.encode(reply).hex().upper() if reply is not None else "-"
            expected.append(f"R {reply_hex} M {sim.malformed} F {len(sim.fires)} V {len(sim.moves)}")
        expected += [f"FIRE {f.gate} {f.duration_ms}" for f in sim.fires]
        expected += [f"SERVO {m.gate} {m.angle_deg} {m.hold_ms}" for m in sim.moves]
    finally:
        sim.stop()
    got = run_harness(harness, ["L " + line.hex().upper() for line in lines], n_gates, version, servo_gates)
    mismatches = [(lines[i] if i < len(lines) else None, e, g)
                  for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    assert not mismatches, mismatches[:5]
    assert len(got) == len(expected)
    assert sum(1 for e in expected if e.startswith("FIRE")) > 20  # the vectors really fire gates
    replies = [sp.decode(bytes.fromhex(e.split()[1])) for e in expected if e.startswith("R ") and e.split()[1] != "-"]
    naks = {r.reason for r in replies if isinstance(r, sp.Nak)}
    assert "bad_gate" in naks
    assert ("not_servo" in naks) == (len(servo_gates) < n_gates)  # a SERVO to a solenoid gate
    if servo_gates:
        assert sum(1 for e in expected if e.startswith("SERVO")) > 10  # ...and the vectors really move servos
        assert "bad_angle" in naks
    else:
        assert not any(e.startswith("SERVO") for e in expected)


@needs_gxx
def test_byte_stream_framing(harness: Path) -> None:
    stream = (sp.encode(sp.Hello()) + sp.encode(sp.Fire(1, 1, 50)) + b"Z" * 300 + b"\n" + sp.encode(sp.Ping(2)))
    got = run_harness(harness, ["S " + stream.hex().upper()])
    expected = sp.encode(sp.Banner(1, 4)) + sp.encode(sp.Ack(1)) + sp.encode(sp.Pong(2))
    assert got[0] == f"R {expected.hex().upper()} M 1 F 1 V 0"  # the overlong line is dropped and counted


# --- the sketch itself, on a stand-in Arduino ----------------------------------------------------
ARDUINO_STUB = r"""
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <string>
#include <vector>
#define HIGH 1
#define LOW 0
#define OUTPUT 1
#define LED_BUILTIN 13
extern unsigned long fake_now;
extern int pin_level[64];
inline unsigned long millis() { return fake_now; }
inline void pinMode(uint8_t, uint8_t) {}
inline void digitalWrite(uint8_t pin, uint8_t level) { pin_level[pin] = level; }
struct FakeSerial {
    std::string in, out;
    void begin(unsigned long) {}
    int available() { return (int)in.size(); }
    int read() { int c = (uint8_t)in[0]; in.erase(0, 1); return c; }
    size_t write(const uint8_t* b, size_t n) { out.append((const char*)b, n); return n; }
};
extern FakeSerial Serial;
"""

SERVO_STUB = r"""
#pragma once
#include <stdint.h>
extern int servo_angle[64];
class Servo {
    uint8_t pin_ = 0;
  public:
    void attach(uint8_t pin) { pin_ = pin; }
    void write(int angle) { servo_angle[pin_] = angle; }
};
"""

SKETCH_MAIN = r"""
#include "Arduino.h"
#include <cstdio>
unsigned long fake_now = 0;
int pin_level[64];
int servo_angle[64];
FakeSerial Serial;
void setup();
void loop();
static void step(unsigned long t) { fake_now = t; loop(); }
int main() {
    setup();
    std::printf("closed %d %d %d %d\n", pin_level[4], pin_level[5], pin_level[6], servo_angle[9]);
    Serial.in = "HELLO*35\nFIRE 1 2 80*%s\nFIRE 2 4 100*%s\n";
    step(1000);
    std::printf("out %s", Serial.out.c_str());
    std::printf("open %d %d\n", pin_level[5], servo_angle[9]);
    step(1079);
    std::printf("t79 %d %d\n", pin_level[5], servo_angle[9]);
    step(1080);
    std::printf("t80 %d %d\n", pin_level[5], servo_angle[9]);
    step(1100);
    std::printf("t100 %d %d\n", pin_level[5], servo_angle[9]);
    return 0;
}
"""


@needs_gxx
def test_sketch_drives_pins_and_servos(tmp_path: Path) -> None:
    (tmp_path / "Arduino.h").write_text(ARDUINO_STUB)
    (tmp_path / "Servo.h").write_text(SERVO_STUB)
    crc_a = "%02X" % sp.crc8(b"FIRE 1 2 80")
    crc_b = "%02X" % sp.crc8(b"FIRE 2 4 100")
    (tmp_path / "main.cpp").write_text(SKETCH_MAIN.replace("%s", crc_a, 1).replace("%s", crc_b, 1))
    exe = tmp_path / "sketch"
    cmd = ["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path), "-include", "Arduino.h",
           "-x", "c++", str(INO), "-x", "none", str(tmp_path / "main.cpp"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=10).stdout.splitlines()
    assert out[0] == "closed 0 0 0 10"  # solenoids low, servo at its closed angle
    # The banner at boot (unprompted: a connected daemon sees the reset), then the one for HELLO.
    replies = (sp.encode(sp.Banner(1, 4)) * 2 + sp.encode(sp.Ack(1)) + sp.encode(sp.Ack(2))).decode()
    assert "\n".join(out[1:5]) == "out " + replies.rstrip("\n")
    out = out[:1] + out[2:]
    assert out[4] == "open 1 100"  # gate 2 (pin 5) high, gate 4 servo at its open angle
    assert out[5] == "t79 1 100"
    assert out[6] == "t80 0 100"  # the 80 ms pulse ended
    assert out[7] == "t100 0 10"  # the 100 ms servo pulse ended


SERVO_MAIN = r"""
#include "Arduino.h"
#include <cstdio>
unsigned long fake_now = 0;
int pin_level[64];
int servo_angle[64];
FakeSerial Serial;
void setup();
void loop();
static void step(unsigned long t) { fake_now = t; loop(); }
int main() {
    setup();
    Serial.in = "@IN@";
    step(1000);
    std::printf("out %s", Serial.out.c_str());
    std::printf("t0 %d\n", servo_angle[9]);
    step(1049);
    std::printf("t49 %d\n", servo_angle[9]);
    step(1050);
    std::printf("t50 %d\n", servo_angle[9]);
    Serial.in = "@FIRE@";
    step(2000);
    std::printf("fire %d\n", servo_angle[9]);
    step(2100);
    std::printf("after %d\n", servo_angle[9]);
    return 0;
}
"""


@needs_gxx
def test_sketch_moves_servos_to_the_commanded_angles(tmp_path: Path) -> None:
    """SERVO ... 0 sets the rest angle, SERVO ... hold moves to a bin angle and back; FIRE keeps open_deg."""
    (tmp_path / "Arduino.h").write_text(ARDUINO_STUB)
    (tmp_path / "Servo.h").write_text(SERVO_STUB)
    commands = [sp.Servo(1, 4, 45, 0), sp.Servo(2, 4, 135, 50), sp.Servo(3, 1, 90, 0), sp.Servo(4, 4, 200, 0)]
    wire = b"".join(sp.encode(c) for c in commands).decode().replace("\n", "\\n")
    fire = sp.encode(sp.Fire(5, 4, 100)).decode().replace("\n", "\\n")
    (tmp_path / "main.cpp").write_text(SERVO_MAIN.replace("@IN@", wire).replace("@FIRE@", fire))
    exe = tmp_path / "sketch"
    cmd = ["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path), "-include", "Arduino.h",
           "-x", "c++", str(INO), "-x", "none", str(tmp_path / "main.cpp"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=10).stdout.splitlines()
    replies = sp.encode(sp.Banner(1, 4)) + sp.encode(sp.Ack(1)) + sp.encode(sp.Ack(2)) + \
        sp.encode(sp.Nak(3, "not_servo")) + sp.encode(sp.Nak(4, "bad_angle"))
    assert "\n".join(out[:5]) == "out " + replies.decode().rstrip("\n")
    assert out[5:] == ["t0 135", "t49 135", "t50 45",  # the bin angle for 50 ms, then the new rest angle
                       "fire 100", "after 45"]  # plain FIRE: config.h open_deg, back to the rest angle
