"""Run summaries (benchmark, demo, exit log) and periodic stats payloads, computed from the metrics."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from daemon.metrics import PipelineMetrics


@dataclass(frozen=True)
class RunSummary:
    """Throughput, latency and outcome counts of one run (also the benchmark's result)."""

    duration_s: float
    frames_captured: int
    frames_processed: int
    capture_fps: float
    processing_fps: float
    dropped_frames: int
    bad_frames: int
    camera_failures: int
    lost_tracks: int
    merged_tracks: int
    items: int
    sorted: int
    rejected: int
    rejects_by_reason: dict[str, int]
    per_class: dict[str, int]
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    inference_p50_ms: float | None
    inference_p95_ms: float | None
    frame_p99_ms: float | None
    actuations_ok: int
    actuation_errors: dict[str, int]
    fire_error_p99_ms: float | None
    mqtt_undelivered: int = 0  # messages the broker had not acknowledged when the daemon exited

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_summary(m: PipelineMetrics) -> RunSummary:
    """fps are measured over the processed frames' own time span: start-up and the final drain do not count."""
    duration = max(1e-9, time.monotonic() - m.started)
    active = (m.last_frame - m.first_frame) if m.first_frame is not None and m.last_frame is not None else 0.0
    lat50, lat99 = m.decision.percentiles_ms(50, 99)
    inf50, inf95 = m.inference.percentiles_ms(50, 95)
    (frame99,) = m.frame_processing.percentiles_ms(99)
    (fire99,) = m.fire_error.percentiles_ms(99)
    return RunSummary(
        duration_s=round(duration, 3),
        frames_captured=m.captured.total,
        frames_processed=m.processed.total,
        capture_fps=round(max(0, m.captured.total - 1) / active, 2) if active > 0 else 0.0,
        processing_fps=round(max(0, m.processed.total - 1) / active, 2) if active > 0 else 0.0,
        dropped_frames=m.dropped_frames,
        bad_frames=m.bad_frames + m.undecodable_frames,
        camera_failures=m.camera_failures,
        lost_tracks=m.lost_tracks,
        merged_tracks=m.merged_tracks,
        items=m.items,
        sorted=m.sorted,
        rejected=m.items - m.sorted,
        rejects_by_reason=dict(m.rejects),
        per_class=dict(m.per_class),
        latency_p50_ms=lat50,
        latency_p99_ms=lat99,
        inference_p50_ms=inf50,
        inference_p95_ms=inf95,
        frame_p99_ms=frame99,
        actuations_ok=m.actuations_ok,
        actuation_errors=dict(m.actuation_errors),
        fire_error_p99_ms=fire99,
    )


def stats_payload(m: PipelineMetrics, run: str, serial: str, broker: str, mqtt_pending: int,
                  serial_malformed_lines: int = 0, controller_resets: int = 0) -> dict[str, Any]:
    """The ``stats`` topic payload (docs/mqtt.md); rates are since the previous call.

    The serial counts come from the actuator, which owns the link (they are not pipeline metrics)."""
    inf50, inf95 = m.inference.percentiles_ms(50, 95)
    lat50, lat99 = m.decision.percentiles_ms(50, 99)
    (fire99,) = m.fire_error.percentiles_ms(99)
    return {
        "run": run,
        "time": round(time.time(), 3),
        "uptime_s": round(time.monotonic() - m.started, 1),
        "capture_fps": m.captured.rate(),
        "processing_fps": m.processed.rate(),
        "frames_captured": m.captured.total,
        "frames_processed": m.processed.total,
        "dropped_frames": m.dropped_frames,
        "bad_frames": m.bad_frames + m.undecodable_frames,
        "inference_ms_p50": inf50,
        "inference_ms_p95": inf95,
        "latency_ms_p50": lat50,
        "latency_ms_p99": lat99,
        "fire_error_ms_p99": fire99,
        "items": m.items,
        "lost_tracks": m.lost_tracks,
        "merged_tracks": m.merged_tracks,
        "counts_per_class": dict(m.per_class),
        "rejects_by_reason": dict(m.rejects),
        "actuations_ok": m.actuations_ok,
        "actuation_errors": dict(m.actuation_errors),
        "serial": serial,
        "serial_malformed_lines": serial_malformed_lines,
        "controller_resets": controller_resets,
        "broker": broker,
        "mqtt_pending": mqtt_pending,
    }
