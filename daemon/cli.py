"""The ``wastesort`` command: run the service, the demo, the controller simulator, check a config."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.settings import Settings

DELEGATED = {"calibrate": "calibration.cli", "bench": "bench.cli"}


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wastesort", description="Real-time waste sorting daemon.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the sorting service")
    run.add_argument("--config", required=True, type=Path, help="TOML configuration file")

    demo = sub.add_parser("demo", help="sort a simulated conveyor end to end")
    demo.add_argument("--items", type=int, default=12, help="number of items on the belt (default 12)")
    demo.add_argument("--no-realtime", action="store_true", help="process the video as fast as possible")
    demo.add_argument("--json", action="store_true", help="print the final summary as one JSON line on stdout")
    demo.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    demo.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default=None, help="default: the daemon's ([classify] backend)")
    demo.add_argument("--mqtt-host", default="localhost")
    demo.add_argument("--mqtt-port", type=int, default=1883)
    demo.add_argument("--no-mqtt", action="store_true", help="do not publish even if a broker is reachable")
    demo.add_argument("--line-id", default="demo")

    sim = sub.add_parser("sim-controller", help="simulate the gate controller on a pseudo-terminal")
    sim.add_argument("--link", required=True, help="symlink to create for the daemon side of the pty")
    sim.add_argument("--gates", type=int, default=4)
    sim.add_argument("--version", type=int, default=1, help="protocol version to announce")
    sim.add_argument("--servo", default="", help="servo gates, e.g. 4 or 2,4 (they take SERVO; the others NAK it)")

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", type=Path)

    for name, module in DELEGATED.items():
        d = sub.add_parser(name, help=f"delegated to {module}", add_help=False)
        d.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _delegate(name: str, argv: list[str]) -> int:
    module = DELEGATED[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module.startswith(e.name):
            print(f"error: 'wastesort {name}' is not available: module {module} is not installed", file=sys.stderr)
            return 2
        raise
    if not hasattr(mod, "main"):
        print(f"error: {module} has no main(argv)", file=sys.stderr)
        return 2
    return int(mod.main(argv) or 0)


def _load_settings_or_report(path: Path) -> Settings | None:
    """The settings, or None after printing the validation error (the caller exits 2)."""
    from daemon.settings import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return None


def cmd_check_config(path: Path) -> int:
    s = _load_settings_or_report(path)
    if s is None:
        return 2
    print(f"{path}: OK (camera {s.camera.source!r}, {len(s.gates)} gates, serial {s.serial.port}, "
          f"mqtt {s.mqtt.host}:{s.mqtt.port} topics {s.mqtt.prefix}/{s.mqtt.line_id}/#)")
    return 0


def cmd_run(path: Path) -> int:
    settings = _load_settings_or_report(path)
    if settings is None:
        return 2

    import structlog

    from daemon.logging_setup import setup_logging
    from daemon.notify import SystemdNotifier
    from daemon.pipeline import Pipeline

    setup_logging(settings.log)
    log = structlog.get_logger("wastesort")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    reload_requested = threading.Event()

    def on_reload(signum: int, _frame: FrameType | None) -> None:  # `systemctl reload wastesort`
        reload_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_reload)
    notifier = SystemdNotifier()
    pipeline = Pipeline(settings, notifier=notifier)
    try:
        pipeline.start()
    except (FileNotFoundError, ValueError) as e:  # missing/invalid model or background image: say so plainly
        log.error("startup_failed", error=str(e))
        print(f"error: {e}", file=sys.stderr)
        notifier.notify(f"STATUS=failed: {e}")
        return 1
    except Exception as e:  # anything else (e.g. a corrupt checkpoint): keep the traceback in the log
        log.exception("startup_failed")
        print(f"error: start-up failed: {type(e).__name__}: {e}", file=sys.stderr)
        notifier.notify(f"STATUS=failed: {type(e).__name__}")
        return 1
    ready = False
    waiting_for = ""
    while not stop.is_set() and not pipeline.wait_source_done(0.2):
        if reload_requested.is_set():
            reload_requested.clear()
            log.info("signal", signal="SIGHUP", action="reload model")
            pipeline.reload_model()
        if ready:
            continue
        if pipeline.wait_ready(0.0):
            ready = True
            notifier.ready(pipeline.status_line())
            log.info("ready", status=pipeline.status_line())
            continue
        now_waiting = "camera" if not pipeline.capture_opened() else "serial controller"
        if now_waiting != waiting_for:  # one STATUS per change, not one per loop
            waiting_for = now_waiting
            notifier.status(f"waiting for {waiting_for}")
    summary = pipeline.stop()
    notifier.close()
    capture_failed = pipeline.capture is not None and pipeline.capture.failed is not None
    log.info("exit", items=summary.items, capture_failed=capture_failed)
    return 1 if capture_failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from daemon.demo import DemoOptions, run_demo

    opts = DemoOptions(
        items=args.items, realtime=not args.no_realtime, json=args.json, model=args.model, backend=args.backend or DemoOptions.backend,
        mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port, mqtt=not args.no_mqtt, line_id=args.line_id,
    )
    if opts.items < 1:
        print("error: --items must be at least 1", file=sys.stderr)
        return 2
    try:
        run_demo(opts)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.model is None:
            print("hint: the shipped model (model/weights/default.pt) is not there yet; "
                  "pass --model PATH to use another checkpoint", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = _build_parser().parse_args(argv)
    if args.command == "check-config":
        return cmd_check_config(args.file)
    if args.command == "run":
        return cmd_run(args.config)
    if args.command == "demo":
        return cmd_demo(args)
    if args.command == "sim-controller":
        from daemon import sim_controller

        return sim_controller.main(["--link", args.link, "--gates", str(args.gates), "--version", str(args.version),
                                    "--servo", args.servo])
    return 2


if __name__ == "__main__":
    sys.exit(main())
