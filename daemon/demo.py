"""``wastesort demo``: a simulated conveyor sorted end to end on this machine.

Renders a belt video from the bundled samples, starts the gate-controller
simulator on a pseudo-terminal, runs the real pipeline (shipped model, serial
protocol, MQTT when a broker answers) and scores the result against the known
labels.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from daemon.classify import load_model
from daemon.conveyor_sim import SimVideo, load_samples, render_conveyor
from daemon.events import ItemEvent
from daemon.logging_setup import setup_logging
from daemon.pipeline import run_pipeline
from daemon.settings import ClassifySettings, LogSettings, Settings, load_settings
from daemon.sim_controller import SimController


@dataclass(frozen=True)
class DemoOptions:
    items: int = 12
    realtime: bool = True
    json: bool = False
    model: Path | None = None
    backend: str = ClassifySettings.model_fields["backend"].default
    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    mqtt: bool = True
    line_id: str = "demo"
    speed_mm_s: float = 300.0
    views: int = 1  # classify.views
    view_spacing_mm: float = 0.0
    max_view_wait_ms: float = 250.0
    crop_padding_px: int = ClassifySettings.model_fields["crop_padding_px"].default
    samples: tuple[tuple[str, Path], ...] | None = None  # (label, photo) put on the belt; None: the bundled samples


def broker_reachable(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def demo_settings(video: SimVideo, serial_link: Path, opts: DemoOptions, mqtt_enabled: bool) -> Settings:
    """The demo's configuration: 1 px = 1 mm, four gates downstream of the camera."""
    return load_settings(
        None,
        camera={"source": str(video.path), "realtime": opts.realtime},
        belt={"region": [0, 0, video.width, video.height], "speed_mm_s": opts.speed_mm_s, "px_per_mm": 1.0},
        classify={"model_path": str(opts.model) if opts.model else None, "backend": opts.backend,
                  "views": opts.views, "view_spacing_mm": opts.view_spacing_mm,
                  "max_view_wait_ms": opts.max_view_wait_ms, "crop_padding_px": opts.crop_padding_px},
        gates={
            "1": {"distance_mm": 800, "lead_time_ms": 10},
            "2": {"distance_mm": 1000, "lead_time_ms": 10},
            "3": {"distance_mm": 1200, "lead_time_ms": 10},
            "4": {"distance_mm": 1400, "lead_time_ms": 10},
        },
        serial={"port": str(serial_link)},
        mqtt={"enabled": mqtt_enabled, "host": opts.mqtt_host, "port": opts.mqtt_port, "line_id": opts.line_id,
              "stats_interval_s": 2.0},
        log={"level": "warning"},
    )


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the demo and return its summary (the --json line). Raises FileNotFoundError without a model."""
    setup_logging(LogSettings(level="warning"))
    classifier = load_model(ClassifySettings(model_path=opts.model, backend=opts.backend))  # type: ignore[arg-type]
    say = sys.stderr if opts.json else out
    mqtt_enabled = opts.mqtt and broker_reachable(opts.mqtt_host, opts.mqtt_port)
    if opts.mqtt and not mqtt_enabled:
        print(f"note: no MQTT broker at {opts.mqtt_host}:{opts.mqtt_port}; running without MQTT", file=say)
    with tempfile.TemporaryDirectory(prefix="wastesort-demo-") as tmp:
        video = render_conveyor(Path(tmp) / "belt.avi", list(opts.samples or load_samples()), opts.items, speed_px_s=opts.speed_mm_s)
        sim = SimController(Path(tmp) / "gate-controller", n_gates=4).start()
        settings = demo_settings(video, sim.link, opts, mqtt_enabled)
        if mqtt_enabled:
            print(f"MQTT: follow with  mosquitto_sub -h {opts.mqtt_host} -p {opts.mqtt_port} "
                  f"-t '{settings.mqtt.prefix}/{opts.line_id}/#' -v", file=say)
        print(f"{opts.items} items on a {opts.speed_mm_s:.0f} mm/s belt "
              f"({'real time' if opts.realtime else 'as fast as possible'}), classes: {classifier.class_names}",
              file=say)
        scored: list[tuple[ItemEvent, str | None]] = []

        def show(e: ItemEvent) -> None:
            truth = video.item_at(e.frame, e.position_mm, tolerance_px=60)
            label = truth.label if truth else None
            scored.append((e, label))
            mark = "?" if label is None else ("ok" if label == e.label else f"WRONG, is {label}")
            route = f"gate {e.gate}" + ("" if e.decision == "sort" else f" (reject: {e.reject_reason})")
            print(f"item {e.id:3d}  {e.label:<10} {e.confidence:5.2f}  -> {route:<28} [{mark}]  "
                  f"{e.latency_ms:6.1f} ms", file=say, flush=True)

        try:
            summary = run_pipeline(settings, classifier=classifier, on_item=show)
        finally:
            sim.stop()
    known = [(e, lb) for e, lb in scored if lb is not None]
    correct = sum(1 for e, lb in known if e.label == lb)
    result = {
        "items_in": opts.items,
        "items": summary.items,
        "sorted": summary.sorted,
        "rejected": summary.rejected,
        "rejects_by_reason": summary.rejects_by_reason,
        "accuracy": round(correct / len(known), 4) if known else None,
        "actuations_ok": summary.actuations_ok,
        "actuation_errors": summary.actuation_errors,
        "capture_fps": summary.capture_fps,
        "processing_fps": summary.processing_fps,
        "dropped_frames": summary.dropped_frames,
        "frames_processed": summary.frames_processed,
        "inference_p95_ms": summary.inference_p95_ms,
        "latency_p50_ms": summary.latency_p50_ms,
        "latency_p99_ms": summary.latency_p99_ms,
        "fire_error_p99_ms": summary.fire_error_p99_ms,
        "mqtt": mqtt_enabled,
    }
    if opts.json:
        print(json.dumps(result), file=out, flush=True)
    else:
        acc = "n/a" if result["accuracy"] is None else f"{result['accuracy']:.0%}"
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.rejects_by_reason.items()))
        print(
            f"\n{summary.items}/{opts.items} items: {summary.sorted} sorted, {summary.rejected} rejected"
            f"{f' ({reasons})' if reasons else ''}; accuracy {acc} ({correct}/{len(known)})\n"
            f"actuations acknowledged {summary.actuations_ok}, errors {summary.actuation_errors or 'none'}\n"
            f"{summary.processing_fps:.1f} fps processed, {summary.dropped_frames} frames dropped; "
            f"capture->decision latency p50 {one_decimal(summary.latency_p50_ms)}, "
            f"p99 {one_decimal(summary.latency_p99_ms)}; gate timing error p99 {one_decimal(summary.fire_error_p99_ms)}",
            file=out,
        )
    return result


def one_decimal(ms: float | None) -> str:
    """A latency for people: tenths of a millisecond are all a belt run can tell apart (the JSON keeps more)."""
    return "n/a" if ms is None else f"{ms:.1f} ms"
