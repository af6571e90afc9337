// Site configuration of the gate controller: edit, then flash (see README.md).
#ifndef WASTESORT_GATE_CONFIG_H
#define WASTESORT_GATE_CONFIG_H

#include <stdint.h>

// Serial speed: must match [serial] baud in /etc/wastesort/wastesort.toml.
#define WS_BAUD 115200

// Number of gates announced in the banner; the daemon refuses a controller with fewer
// gates than the highest gate number in its config.
#define WS_N_GATES 4

enum GateKind : uint8_t { GATE_SOLENOID = 0, GATE_SERVO = 1 };

struct GateConfig {
    GateKind kind;
    uint8_t pin;          // solenoid: driver input (MOSFET gate / relay input); servo: signal pin
    bool active_high;     // solenoid: level that opens the valve
    uint8_t closed_deg;   // servo: resting angle (item passes by) until the daemon sets its own
    uint8_t open_deg;     // servo: diverting angle for a plain FIRE (daemons without servo settings)
};

// Gate n of the protocol is GATES[n - 1]. A daemon with gates.N.kind = "servo" sets the rest
// and bin angles over serial (SERVO command); closed_deg/open_deg only matter before that and
// for daemons that send plain FIRE (docs/calibration.md, "Servo angles").
static const GateConfig GATES[WS_N_GATES] = {
    {GATE_SOLENOID, 4, true, 0, 0},   // gate 1: air jet
    {GATE_SOLENOID, 5, true, 0, 0},   // gate 2: air jet
    {GATE_SOLENOID, 6, true, 0, 0},   // gate 3: air jet
    {GATE_SERVO, 9, true, 10, 100},   // gate 4: servo flap (reject bin)
};

// Close every gate when the daemon has been silent this long (it sends PING every second).
#define WS_SILENCE_FAILSAFE_MS 3000UL

#endif  // WASTESORT_GATE_CONFIG_H
