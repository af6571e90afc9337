// wastesort reference gate controller: N solenoid or servo gates driven over USB serial.
//
// Speaks docs/serial-protocol.md (version 1 with the SERVO and session extensions). All protocol
// logic lives in protocol.h, which has no Arduino dependency and is tested on the PC against the daemon's own Python codec
// and simulator (tests/test_calibration_firmware.py). This file only does the I/O: serial
// bytes in, reply lines out, pins and servos, and closing each gate when its pulse ends.
#include <Servo.h>

#include "config.h"
#include "protocol.h"

static Servo servos[WS_N_GATES];
static bool gate_open[WS_N_GATES];
static unsigned long opened_at[WS_N_GATES];
static unsigned long open_for_ms[WS_N_GATES];
static uint8_t rest_deg[WS_N_GATES];  // servo: closed_deg until the daemon sends SERVO ... 0 (not kept over a reset)
static unsigned long last_rx_ms = 0;

// Close (solenoid off, servo to its rest angle) or open (solenoid on, servo to open_deg: FIRE's meaning).
static void set_gate(uint8_t index, bool open) {
    const GateConfig& g = GATES[index];
    if (g.kind == GATE_SERVO) {
        servos[index].write(open ? g.open_deg : rest_deg[index]);
    } else {
        digitalWrite(g.pin, (open == g.active_high) ? HIGH : LOW);
    }
    gate_open[index] = open;
}

// Called by ws::Controller for a new FIRE (not for a retransmission), before the ACK is sent.
static void fire_gate(uint8_t gate, uint16_t duration_ms, void*) {
    uint8_t index = gate - 1;  // the controller already rejected gates outside 1..WS_N_GATES
    opened_at[index] = millis();
    open_for_ms[index] = duration_ms;  // a gate fired again while open stays open for the new pulse
    set_gate(index, true);
}

static bool is_servo(uint8_t gate, void*) { return GATES[gate - 1].kind == GATE_SERVO; }

// Called by ws::Controller for a new SERVO to a servo gate with an angle in range, before the ACK.
static void move_servo(uint8_t gate, uint16_t angle_deg, uint16_t hold_ms, void*) {
    uint8_t index = gate - 1;
    servos[index].write(angle_deg);
    if (hold_ms == 0) {  // jog / rest: stay here, and return here after later pulses
        rest_deg[index] = (uint8_t)angle_deg;
        gate_open[index] = false;
        return;
    }
    opened_at[index] = millis();  // a bin's pulse: loop() moves back to rest_deg when it ends
    open_for_ms[index] = hold_ms;
    gate_open[index] = true;
}

static ws::Controller controller(WS_N_GATES, ws::PROTOCOL_VERSION, fire_gate, 0, is_servo, move_servo);
static ws::LineReader reader;
static char reply[40];  // the longest reply, the banner, is 26 bytes (NAK ... bad_session: 25)

void setup() {
    for (uint8_t i = 0; i < WS_N_GATES; ++i) {
        if (GATES[i].kind == GATE_SERVO) {
            rest_deg[i] = GATES[i].closed_deg;
            servos[i].attach(GATES[i].pin);
        } else {
            pinMode(GATES[i].pin, OUTPUT);
        }
        set_gate(i, false);
    }
    pinMode(LED_BUILTIN, OUTPUT);
    Serial.begin(WS_BAUD);
    // The banner, unprompted: a daemon that is already connected learns that this board has just
    // (re)started, so it says HELLO again and restores the servo rest angles lost with the RAM.
    size_t n = controller.banner(reply, sizeof reply);
    Serial.write((const uint8_t*)reply, n);
}

void loop() {
    while (Serial.available() > 0) {
        last_rx_ms = millis();
        if (reader.feed((uint8_t)Serial.read(), controller)) {
            size_t n = controller.handle_line(reader.line(), reader.line_len(), reply, sizeof reply);
            if (n > 0) Serial.write((const uint8_t*)reply, n);
        }
    }
    unsigned long now = millis();
    bool any_open = false;
    for (uint8_t i = 0; i < WS_N_GATES; ++i) {
        if (gate_open[i] && now - opened_at[i] >= open_for_ms[i]) set_gate(i, false);  // wrap-safe
        any_open = any_open || gate_open[i];
    }
    if (now - last_rx_ms > WS_SILENCE_FAILSAFE_MS) {
        for (uint8_t i = 0; i < WS_N_GATES; ++i) {
            if (gate_open[i]) set_gate(i, false);
        }
    }
    digitalWrite(LED_BUILTIN, any_open ? HIGH : LOW);
}
