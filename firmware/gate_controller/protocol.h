// Gate controller side of the wastesort serial protocol, version 1 with the SERVO and session
// extensions (docs/serial-protocol.md).
//
// Plain C++11 with no Arduino dependency, so that the same code runs on the board and on a
// PC, where tests/test_calibration_firmware.py compiles it and replays the Python codec's
// test vectors against it, line for line with daemon/sim_controller.py.
// No heap, no STL, no C strings for received data (a line may contain any byte).
#ifndef WASTESORT_GATE_PROTOCOL_H
#define WASTESORT_GATE_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace ws {

// @protocol-constants begin  (checked against daemon/serial_protocol.py by tests/test_calibration_firmware.py)
static const uint16_t PROTOCOL_VERSION = 1;
static const char BANNER_WORD[] = "WASTESORT-GATE";
static const char CMD_HELLO[] = "HELLO";
static const char CMD_FIRE[] = "FIRE";
static const char CMD_SERVO[] = "SERVO";
static const char CMD_SESSION[] = "SESSION";
static const char CMD_CHECK[] = "CHECK";
static const char CMD_PING[] = "PING";
static const char CMD_PONG[] = "PONG";
static const char CMD_ACK[] = "ACK";
static const char CMD_NAK[] = "NAK";
static const char NAK_BAD_GATE[] = "bad_gate";
static const char NAK_NOT_SERVO[] = "not_servo";
static const char NAK_BAD_ANGLE[] = "bad_angle";
static const char NAK_NO_SESSION[] = "no_session";
static const char NAK_BAD_SESSION[] = "bad_session";
static const uint16_t MAX_LINE_BYTES = 128;
static const uint32_t MAX_SEQ = 65535;
static const uint32_t MAX_GATE = 255;
static const uint32_t MAX_DURATION_MS = 10000;
static const uint32_t MAX_VERSION = 999;
static const uint32_t MAX_N_GATES = 255;
static const uint32_t MAX_ANGLE_FIELD = 999;
static const uint32_t SERVO_MAX_DEG = 180;
static const uint8_t MAX_NUMBER_DIGITS = 6;
static const uint8_t CRC8_POLY = 0x07;
static const uint8_t CRC8_INIT = 0x00;
// @protocol-constants end

#ifndef WS_RECENT_FIRES
// FIRE/SERVO commands remembered to recognise retransmissions (the simulator keeps 256; RAM is scarce here).
#define WS_RECENT_FIRES 32
#endif

// CRC-8/SMBUS: poly 0x07, init 0x00, no reflection, no final XOR. crc8("123456789") == 0xF4.
inline uint8_t crc8(const uint8_t* data, size_t len) {
    uint8_t crc = CRC8_INIT;
    for (size_t i = 0; i < len; ++i) {
        crc ^= data[i];
        for (uint8_t bit = 0; bit < 8; ++bit) {
            crc = (crc & 0x80) ? (uint8_t)((crc << 1) ^ CRC8_POLY) : (uint8_t)(crc << 1);
        }
    }
    return crc;
}

enum MsgType { MSG_HELLO, MSG_BANNER, MSG_FIRE, MSG_SERVO, MSG_SESSION, MSG_CHECK, MSG_PING, MSG_PONG, MSG_ACK,
               MSG_NAK };

struct Message {
    MsgType type;
    uint32_t a;  // BANNER: version; FIRE/SERVO/PING/PONG/ACK/NAK: seq
    uint32_t b;  // BANNER: n_gates; FIRE/SERVO: gate; SESSION/CHECK: session
    uint32_t c;  // FIRE: duration_ms; SERVO: hold_ms
    uint32_t d;  // SERVO: angle_deg
    const uint8_t* reason;  // NAK: points into the decoded line
    size_t reason_len;
};

namespace detail {

inline bool word_is(const uint8_t* w, size_t n, const char* name) {
    return n == strlen(name) && memcmp(w, name, n) == 0;
}

inline int hex_value(uint8_t ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

// Unsigned decimal of 1..MAX_NUMBER_DIGITS digits (leading zeros allowed) not above maximum.
inline bool parse_uint(const uint8_t* w, size_t n, uint32_t maximum, uint32_t& out) {
    if (n == 0 || n > MAX_NUMBER_DIGITS) return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) {
        if (w[i] < '0' || w[i] > '9') return false;
        v = v * 10 + (uint32_t)(w[i] - '0');
    }
    if (v > maximum) return false;
    out = v;
    return true;
}

struct Writer {
    char* out;
    size_t cap;
    size_t len;
    bool ok;
    void put(char ch) {
        if (len < cap) out[len++] = ch; else ok = false;
    }
    void text(const char* s) { while (*s) put(*s++); }
    void uint(uint32_t v) {
        char digits[10];
        uint8_t n = 0;
        do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v && n < sizeof digits);
        while (n) put(digits[--n]);
    }
};

}  // namespace detail

// Parse one received line (its '\n' already removed). False for anything the Python codec
// (daemon.serial_protocol.decode) rejects: too long, no/short/bad checksum, non-ASCII,
// empty word, unknown command, wrong argument count, number out of range.
inline bool decode(const uint8_t* line, size_t len, Message& msg) {
    using namespace detail;
    if (len > MAX_LINE_BYTES) return false;
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n')) --len;
    size_t star = len;
    for (size_t i = len; i-- > 0;) {
        if (line[i] == '*') { star = i; break; }
    }
    if (star == len || len - star - 1 != 2) return false;
    int hi = hex_value(line[star + 1]), lo = hex_value(line[star + 2]);
    if (hi < 0 || lo < 0) return false;
    for (size_t i = 0; i < star; ++i) {
        if (line[i] > 0x7F) return false;
    }
    if (crc8(line, star) != (uint8_t)(hi * 16 + lo)) return false;

    const uint8_t* words[5];
    size_t lens[5];
    size_t count = 0, start = 0;
    for (size_t i = 0; i <= star; ++i) {
        if (i == star || line[i] == ' ') {
            if (i == start) return false;  // empty word: leading, trailing or double space
            if (count == 5) return false;  // no message has more than 4 arguments
            words[count] = line + start;
            lens[count++] = i - start;
            start = i + 1;
        }
    }
    const uint8_t* head = words[0];
    size_t head_len = lens[0], args = count - 1;
    if (word_is(head, head_len, CMD_HELLO)) {
        msg.type = MSG_HELLO;
        return args == 0;
    }
    if (word_is(head, head_len, BANNER_WORD)) {
        msg.type = MSG_BANNER;
        return args == 2 && parse_uint(words[1], lens[1], MAX_VERSION, msg.a) &&
               parse_uint(words[2], lens[2], MAX_N_GATES, msg.b);
    }
    if (word_is(head, head_len, CMD_FIRE)) {
        msg.type = MSG_FIRE;
        return args == 3 && parse_uint(words[1], lens[1], MAX_SEQ, msg.a) &&
               parse_uint(words[2], lens[2], MAX_GATE, msg.b) &&
               parse_uint(words[3], lens[3], MAX_DURATION_MS, msg.c);
    }
    if (word_is(head, head_len, CMD_SERVO)) {
        msg.type = MSG_SERVO;
        return args == 4 && parse_uint(words[1], lens[1], MAX_SEQ, msg.a) &&
               parse_uint(words[2], lens[2], MAX_GATE, msg.b) &&
               parse_uint(words[3], lens[3], MAX_ANGLE_FIELD, msg.d) &&
               parse_uint(words[4], lens[4], MAX_DURATION_MS, msg.c);
    }
    if (word_is(head, head_len, CMD_SESSION) || word_is(head, head_len, CMD_CHECK)) {
        msg.type = word_is(head, head_len, CMD_SESSION) ? MSG_SESSION : MSG_CHECK;
        return args == 2 && parse_uint(words[1], lens[1], MAX_SEQ, msg.a) &&
               parse_uint(words[2], lens[2], MAX_SEQ, msg.b);
    }
    if (word_is(head, head_len, CMD_NAK)) {
        msg.type = MSG_NAK;
        if (args != 2 || !parse_uint(words[1], lens[1], MAX_SEQ, msg.a)) return false;
        msg.reason = words[2];
        msg.reason_len = lens[2];
        return true;
    }
    if (word_is(head, head_len, CMD_PING)) msg.type = MSG_PING;
    else if (word_is(head, head_len, CMD_PONG)) msg.type = MSG_PONG;
    else if (word_is(head, head_len, CMD_ACK)) msg.type = MSG_ACK;
    else return false;  // unknown command
    return args == 1 && parse_uint(words[1], lens[1], MAX_SEQ, msg.a);
}

// Append "*CC\n" to a body written into out[0..body_len); returns the line length, 0 if it does not fit.
inline size_t finish_line(char* out, size_t cap, size_t body_len) {
    static const char HEX[] = "0123456789ABCDEF";
    if (body_len + 4 > cap) return 0;
    uint8_t crc = crc8((const uint8_t*)out, body_len);
    out[body_len] = '*';
    out[body_len + 1] = HEX[crc >> 4];
    out[body_len + 2] = HEX[crc & 0x0F];
    out[body_len + 3] = '\n';
    return body_len + 4;
}

// "<word> <n>[ <n2>|<text>]*CC\n" into out; returns the length, 0 if cap is too small.
inline size_t encode(const char* word, uint32_t n, const char* text, bool has_n2, uint32_t n2, char* out, size_t cap) {
    detail::Writer w = {out, cap, 0, true};
    w.text(word);
    w.put(' ');
    w.uint(n);
    if (has_n2) { w.put(' '); w.uint(n2); }
    if (text) { w.put(' '); w.text(text); }
    return w.ok ? finish_line(out, cap, w.len) : 0;
}

inline size_t encode_banner(uint32_t version, uint32_t n_gates, char* out, size_t cap) {
    return encode(BANNER_WORD, version, 0, true, n_gates, out, cap);
}
inline size_t encode_ack(uint32_t seq, char* out, size_t cap) { return encode(CMD_ACK, seq, 0, false, 0, out, cap); }
inline size_t encode_pong(uint32_t seq, char* out, size_t cap) { return encode(CMD_PONG, seq, 0, false, 0, out, cap); }
inline size_t encode_nak(uint32_t seq, const char* reason, char* out, size_t cap) {
    return encode(CMD_NAK, seq, reason, false, 0, out, cap);
}

typedef void (*FireFn)(uint8_t gate, uint16_t duration_ms, void* context);
// SERVO: move to angle_deg; hold_ms > 0: back to rest after it; hold_ms == 0: angle_deg is the new rest.
typedef void (*ServoFn)(uint8_t gate, uint16_t angle_deg, uint16_t hold_ms, void* context);
typedef bool (*IsServoFn)(uint8_t gate, void* context);

// The controller's duties (docs/serial-protocol.md, "Controller duties"), exactly as
// daemon/sim_controller.py's handle_line: banner (and HELLO forgets every remembered command, so a
// restarted daemon's sequence numbers are never taken for retransmissions), pong, fire/servo + ack,
// retransmission without acting again, NAK bad_gate / not_servo / bad_angle, SESSION/CHECK (a reset
// loses the session: CHECK then gets NAK no_session); malformed lines and replies get no answer.
// Without is_servo/servo every SERVO gets NAK not_servo (a controller with solenoids only).
class Controller {
  public:
    Controller(uint8_t n_gates, uint16_t version, FireFn fire, void* context, IsServoFn is_servo = 0,
               ServoFn servo = 0)
        : n_gates_(n_gates), version_(version), fire_(fire), servo_(servo), is_servo_(is_servo),
          context_(context), malformed_(0), session_(0), count_(0), next_(0) {}

    // The banner line, also sent unprompted at boot so that the daemon sees a reset at once.
    size_t banner(char* out, size_t cap) const { return encode_banner(version_, n_gates_, out, cap); }

    // Handle one line (without '\n'); write the reply line into out, return its length (0: no reply).
    size_t handle_line(const uint8_t* line, size_t len, char* out, size_t cap) {
        Message m = Message();
        if (!decode(line, len, m)) {
            ++malformed_;
            return 0;
        }
        switch (m.type) {
            case MSG_HELLO:
                count_ = 0;  // a new connection: nothing of an earlier one is a retransmission
                next_ = 0;
                return banner(out, cap);
            case MSG_SESSION:
                if (m.b == 0) return encode_nak(m.a, NAK_BAD_SESSION, out, cap);
                session_ = (uint16_t)m.b;
                return encode_ack(m.a, out, cap);
            case MSG_CHECK:
                if (m.b == 0 || m.b != session_) return encode_nak(m.a, NAK_NO_SESSION, out, cap);
                return encode_pong(m.a, out, cap);
            case MSG_PING: return encode_pong(m.a, out, cap);
            case MSG_FIRE: return fire(m, out, cap);
            case MSG_SERVO: return servo(m, out, cap);
            default: return 0;  // BANNER, PONG, ACK, NAK are replies, not requests
        }
    }

    uint32_t malformed() const { return malformed_; }
    void count_malformed() { ++malformed_; }

  private:
    size_t fire(const Message& m, char* out, size_t cap) {
        if (m.b < 1 || m.b > n_gates_) return encode_nak(m.a, NAK_BAD_GATE, out, cap);
        if (!is_retransmission(m)) fire_((uint8_t)m.b, (uint16_t)m.c, context_);
        return encode_ack(m.a, out, cap);
    }

    size_t servo(const Message& m, char* out, size_t cap) {
        if (m.b < 1 || m.b > n_gates_) return encode_nak(m.a, NAK_BAD_GATE, out, cap);
        if (!is_servo_ || !servo_ || !is_servo_((uint8_t)m.b, context_)) return encode_nak(m.a, NAK_NOT_SERVO, out, cap);
        if (m.d > SERVO_MAX_DEG) return encode_nak(m.a, NAK_BAD_ANGLE, out, cap);
        if (!is_retransmission(m)) servo_((uint8_t)m.b, (uint16_t)m.d, (uint16_t)m.c, context_);
        return encode_ack(m.a, out, cap);
    }

    // True when m repeats a remembered (seq, command) whose ACK was lost; otherwise remember it.
    // A known seq with a different command is remembered in place, as the simulator's dict does.
    bool is_retransmission(const Message& m) {
        uint8_t slot = next_;
        bool known = false;
        for (uint8_t i = 0; i < count_ && !known; ++i) {
            if (seq_[i] != m.a) continue;
            if (type_[i] == (uint8_t)m.type && gate_[i] == m.b && duration_[i] == m.c && angle_[i] == m.d) return true;
            slot = i;
            known = true;
        }
        if (!known) {
            next_ = (uint8_t)((next_ + 1) % WS_RECENT_FIRES);
            if (count_ < WS_RECENT_FIRES) ++count_;
        }
        seq_[slot] = (uint16_t)m.a;
        type_[slot] = (uint8_t)m.type;
        gate_[slot] = (uint8_t)m.b;
        duration_[slot] = (uint16_t)m.c;
        angle_[slot] = (uint16_t)m.d;
        return false;
    }

    uint8_t n_gates_;
    uint16_t version_;
    FireFn fire_;
    ServoFn servo_;
    IsServoFn is_servo_;
    void* context_;
    uint32_t malformed_;
    uint16_t session_;  // 0 after boot: RAM only, so that a reset is visible to CHECK
    uint16_t seq_[WS_RECENT_FIRES];
    uint8_t type_[WS_RECENT_FIRES];
    uint8_t gate_[WS_RECENT_FIRES];
    uint16_t duration_[WS_RECENT_FIRES];
    uint16_t angle_[WS_RECENT_FIRES];
    uint8_t count_;
    uint8_t next_;
};

// Splits the byte stream into lines. A line longer than MAX_LINE_BYTES is dropped up to its
// newline and counted as malformed (no reply: the daemon's timeout and retry handle it).
class LineReader {
  public:
    LineReader() : len_(0), line_len_(0), overflow_(false) {}

    // Feed one byte; returns true when buf()/len() hold a complete line (without '\n').
    bool feed(uint8_t ch, Controller& controller) {
        if (ch == '\n') {
            bool was_overflow = overflow_;
            overflow_ = false;
            if (was_overflow) {
                controller.count_malformed();
                len_ = 0;
                return false;
            }
            line_len_ = len_;
            len_ = 0;
            return true;
        }
        if (overflow_) return false;
        if (len_ >= MAX_LINE_BYTES) {
            overflow_ = true;
            return false;
        }
        buf_[len_++] = ch;
        return false;
    }

    const uint8_t* line() const { return buf_; }
    size_t line_len() const { return line_len_; }

  private:
    uint8_t buf_[MAX_LINE_BYTES];
    size_t len_;
    size_t line_len_;
    bool overflow_;
};

}  // namespace ws

#endif  // WASTESORT_GATE_PROTOCOL_H
