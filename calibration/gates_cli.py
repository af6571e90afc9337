"""``wastesort calibrate gates``: check the arguments locally, test-fire or jog, and collect the config changes.

Every value is checked with the bounds of the daemon's config model and of the controller
before anything is sent, so a typo is a clear refusal and not a controller error.
"""

from __future__ import annotations

import argparse

from calibration import gates
from calibration.config_writer import Updates, read_config
from calibration.errors import CalibrationError
from calibration.outcome import StepOutcome
from calibration.preview import Preview
from daemon.settings import SerialSettings, Settings


def step_gates(args: argparse.Namespace, _preview: Preview) -> StepOutcome:
    cfg = read_config(args.config)
    if args.jog is None and (args.angles or args.bin_names or args.rest is not None):
        raise CalibrationError("--angles, --bin-names and --rest go with --jog GATE")
    distances = gates.parse_gate_values(args.distance, "--distance")
    leads = gates.parse_gate_values(args.lead_time, "--lead-time")
    pulses = gates.parse_gate_values(args.pulse, "--pulse")
    if args.fire is None and args.jog is None and not (distances or leads or pulses):
        raise CalibrationError("nothing to do: pass --fire all|1,3, --jog GATE --angles DEG,... "
                               "and/or --distance/--lead-time/--pulse GATE=VALUE")
    for g, d in distances.items():
        if d <= 0:
            raise CalibrationError(f"--distance for gate {g} must be positive, got {d:g}")
    for g, p in pulses.items():
        gates.check_pulse(p, f"--pulse for gate {g}")
    if args.pulse_ms is not None:
        gates.check_pulse(args.pulse_ms, "--pulse-ms")
    if args.repeat < 1:
        raise CalibrationError("--repeat must be at least 1")
    if args.interval_s < 0:
        raise CalibrationError("--interval-s must not be negative")
    if args.rest is not None:
        gates.check_angle(args.rest, "--rest")
    updates: Updates = {}
    for g, d in distances.items():
        updates[f"gates.{g}.distance_mm"] = d
    for g, v in leads.items():
        if g not in cfg.gates and g not in distances:
            raise CalibrationError(f"gate {g} is not in [gates]; give its --distance too")
        updates[f"gates.{g}.lead_time_ms"] = v
    for g, v in pulses.items():
        if g not in cfg.gates and g not in distances:
            raise CalibrationError(f"gate {g} is not in [gates]; give its --distance too")
        updates[f"gates.{g}.pulse_ms"] = int(v)
    new_gates = sorted(g for g in distances if g not in cfg.gates)
    if new_gates:
        _check_controller_has(args, cfg, new_gates)
    lines: list[str] = []
    result: gates.GateTestResult | None = None
    if args.jog is not None:
        if args.fire is not None:
            raise CalibrationError("run --fire and --jog separately")
        result = _jog(args, cfg, distances, updates, lines)
    if args.fire is not None:
        if args.fire.strip().lower() == "all":
            to_fire = sorted(cfg.gates)
        else:
            try:
                to_fire = [int(v) for v in args.fire.split(",") if v.strip()]
            except ValueError:
                raise CalibrationError(f"--fire takes 'all' or gate numbers such as 1,3, got {args.fire!r}") from None
        if not to_fire or min(to_fire) < 1:
            raise CalibrationError(f"--fire: gate numbers start at 1, got {args.fire!r}")
        fires: list[gates.Command] = [
            (g, args.pulse_ms if args.pulse_ms is not None else
             int(pulses.get(g, cfg.gates[g].pulse_ms if g in cfg.gates else 80)), None)
            for g in to_fire
        ]
        result = gates.fire_gates(_serial_settings(args, cfg), fires, repeat=args.repeat, interval_s=args.interval_s,
                                  connect_timeout_s=args.connect_timeout_s)
        lines.append(f"controller on {result.port}: protocol {result.protocol_version}, {result.controller_gates} gates")
        for o in result.outcomes:
            if o.ok:
                lines.append(f"gate {o.gate}: fired {o.duration_ms} ms, ACK after {o.ack_ms:.1f} ms "
                             f"({o.attempts} attempt{'s' if o.attempts != 1 else ''})")
            else:
                lines.append(f"gate {o.gate}: FAILED ({o.error})")
    return StepOutcome(result, updates, lines)


def _check_controller_has(args: argparse.Namespace, cfg: Settings, new_gates: list[int]) -> None:
    """A new [gates.N] table only for an output the controller has: ask it (HELLO) for its gate count."""
    try:
        hello = gates.fire_gates(_serial_settings(args, cfg), [], connect_timeout_s=args.connect_timeout_s)
    except CalibrationError as e:
        raise CalibrationError(
            f"--distance creates gate {', '.join(map(str, new_gates))}, not in [gates] yet: the controller is asked "
            f"how many gates it has, and it did not answer: {e}"
        ) from None
    beyond = [g for g in new_gates if g > hello.controller_gates]
    if beyond:
        raise CalibrationError(
            f"--distance: the controller on {hello.port} has {hello.controller_gates} gates "
            f"(1..{hello.controller_gates}); it has no gate {', '.join(map(str, beyond))}"
        )


def _serial_settings(args: argparse.Namespace, cfg: Settings) -> SerialSettings:
    """The config's [serial] with --port/--baud applied."""
    return cfg.serial.model_copy(update={k: v for k, v in {"port": args.port, "baud": args.baud}.items() if v is not None})


def _jog(args: argparse.Namespace, cfg: Settings, distances: dict[int, float], updates: Updates,
         lines: list[str]) -> gates.GateTestResult:
    """--jog GATE --angles ...: move the servo through the angles; with --bin-names/--rest, save them."""
    gate = args.jog
    if args.angles is None:
        raise CalibrationError("--jog needs --angles DEG[,DEG...] (e.g. --jog 4 --angles 30,90,150)")
    angles = gates.parse_angles(args.angles)
    if args.hold_s < 0:
        raise CalibrationError("--hold-s must not be negative")
    bins = [b.strip() for b in args.bin_names.split(",")] if args.bin_names else []
    if bins and len(bins) != len(angles):
        raise CalibrationError(f"--bin-names names {len(bins)} bins for {len(angles)} --angles: give one per angle")
    known = cfg.gates.get(gate)
    rest = args.rest if args.rest is not None else (known.rest_angle if known is not None else None)
    save = bool(bins) or args.rest is not None
    if save:
        if known is None and gate not in distances:
            raise CalibrationError(f"gate {gate} is not in [gates]; give its --distance too")
        if rest is None:
            raise CalibrationError(f"gate {gate} has no rest_angle yet: give --rest DEG (where items pass by)")
    result = gates.jog_servo(_serial_settings(args, cfg), gate, angles, rest=rest, hold_s=args.hold_s,
                             connect_timeout_s=args.connect_timeout_s)
    lines.append(f"controller on {result.port}: protocol {result.protocol_version}, {result.controller_gates} gates")
    for o in result.outcomes:
        lines.append(f"gate {o.gate}: at {o.angle} deg" if o.ok else f"gate {o.gate}: {o.angle} deg FAILED ({o.error})")
    if any(o.error == "ack_timeout" for o in result.outcomes):
        lines.append("note: no answer to SERVO: a controller without the servo extension ignores it (flash "
                     "firmware/gate_controller)")
    if not save:
        return result
    if not result.all_ok:
        lines.append(f"gate {gate}: angles not saved (a move failed)")
        return result
    updates[f"gates.{gate}.kind"] = "servo"
    updates[f"gates.{gate}.rest_angle"] = rest
    for name, angle in zip(bins, angles):
        updates[f"gates.{gate}.bin_angles.{name}"] = angle
    return result
