// Host-side driver for protocol.h, used by tests/test_calibration_firmware.py (not for the board).
//
//   protocol_harness <n_gates> <version> [servo gates, e.g. 2,4]
// reads commands from stdin, one per line, and answers one line each:
//   C <hex bytes>   -> C <crc8 as 2 hex digits>
//   L <hex bytes>   -> R <reply bytes as hex, or -> M <malformed count> F <fires so far> V <servo moves so far>
//   S <hex bytes>   -> R <all reply bytes as hex, or -> M <malformed count> F <fires> V <moves>   (byte stream)
// and at the end prints every actuation as "FIRE <gate> <duration_ms>", then every servo
// move as "SERVO <gate> <angle_deg> <hold_ms>".
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../protocol.h"

static unsigned fires_gate[4096];
static unsigned fires_duration[4096];
static unsigned n_fires = 0;
static unsigned moves[4096][3];
static unsigned n_moves = 0;
static bool servo_gate[256];

static void on_fire(uint8_t gate, uint16_t duration_ms, void*) {
    if (n_fires < 4096) {
        fires_gate[n_fires] = gate;
        fires_duration[n_fires] = duration_ms;
    }
    ++n_fires;
}

static void on_servo(uint8_t gate, uint16_t angle_deg, uint16_t hold_ms, void*) {
    if (n_moves < 4096) {
        moves[n_moves][0] = gate;
        moves[n_moves][1] = angle_deg;
        moves[n_moves][2] = hold_ms;
    }
    ++n_moves;
}

static bool is_servo(uint8_t gate, void*) { return servo_gate[gate]; }

static size_t unhex(const char* text, uint8_t* out, size_t cap) {
    size_t n = 0;
    while (text[0] && text[1] && text[0] != '\n' && n < cap) {
        char pair[3] = {text[0], text[1], 0};
        out[n++] = (uint8_t)strtoul(pair, 0, 16);
        text += 2;
    }
    return n;
}

static void print_hex(const char* bytes, size_t len) {
    if (len == 0) { printf("-"); return; }
    for (size_t i = 0; i < len; ++i) printf("%02X", (unsigned)(uint8_t)bytes[i]);
}

int main(int argc, char** argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s <n_gates> <version> [servo gates]\n", argv[0]);
        return 2;
    }
    for (const char* p = argc == 4 ? argv[3] : ""; *p;) {
        char* end;
        unsigned long g = strtoul(p, &end, 10);
        if (end == p) break;
        if (g < 256) servo_gate[g] = true;
        p = *end ? end + 1 : end;
    }
    ws::Controller controller((uint8_t)atoi(argv[1]), (uint16_t)atoi(argv[2]), on_fire, 0, is_servo, on_servo);
    ws::LineReader reader;
    static char input[20000];
    static uint8_t bytes[10000];
    static char reply[8192];
    while (fgets(input, sizeof input, stdin)) {
        size_t n = unhex(input + 2, bytes, sizeof bytes);
        if (input[0] == 'C') {
            printf("C %02X\n", (unsigned)ws::crc8(bytes, n));
        } else if (input[0] == 'L') {
            size_t r = controller.handle_line(bytes, n, reply, sizeof reply);
            printf("R ");
            print_hex(reply, r);
            printf(" M %u F %u V %u\n", (unsigned)controller.malformed(), n_fires, n_moves);
        } else if (input[0] == 'S') {
            size_t total = 0;
            for (size_t i = 0; i < n; ++i) {
                if (reader.feed(bytes[i], controller)) {
                    total += controller.handle_line(reader.line(), reader.line_len(), reply + total, sizeof reply - total);
                }
            }
            printf("R ");
            print_hex(reply, total);
            printf(" M %u F %u V %u\n", (unsigned)controller.malformed(), n_fires, n_moves);
        }
        fflush(stdout);
    }
    for (unsigned i = 0; i < n_fires && i < 4096; ++i) printf("FIRE %u %u\n", fires_gate[i], fires_duration[i]);
    for (unsigned i = 0; i < n_moves && i < 4096; ++i) printf("SERVO %u %u %u\n", moves[i][0], moves[i][1], moves[i][2]);
    return 0;
}
