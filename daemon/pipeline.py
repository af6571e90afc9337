"""Wires capture -> detect/track -> classify -> schedule -> actuate, and reports everything.

``Pipeline`` is what the service runs; ``run_pipeline()`` runs it on a video file
(or any source) to completion and returns a ``RunSummary`` - the entry point for
the benchmark, the demo and the end-to-end tests.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from daemon.actuation import ActuationRequest, ActuationResult
from daemon.actuator import SerialActuator
from daemon.capture import CaptureThread, FrameSlot
from daemon.classify import ItemClassifier, load_model
from daemon.collect import CropCollector
from daemon.events import ItemEvent, WallClock, actuation_payload, alert_payload
from daemon.health import HealthMonitor
from daemon.metrics import PipelineMetrics
from daemon.model_reload import ActiveModel, ModelReloader, describe, file_checksum, model_file
from daemon.mqtt_events import EventPublisher
from daemon.notify import SystemdNotifier, watchdog_interval_s
from daemon.reporting import RunSummary, run_summary, stats_payload
from daemon.schedule import ActuationScheduler
from daemon.settings import Settings
from daemon.worker import FrameProcessor

if TYPE_CHECKING:
    from model import Classifier

__all__ = ["Pipeline", "RunSummary", "run_pipeline"]

log = structlog.get_logger(__name__)

FRAME_ALERT_INTERVAL_S = 5.0
RECENT_HISTORY = 1000


class Pipeline:
    """The running system. start(), then wait_source_done() or stop() from a signal handler."""

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier | None = None,
        notifier: SystemdNotifier | None = None,
        on_item: Callable[[ItemEvent], None] | None = None,
        on_actuation: Callable[[ActuationResult], None] | None = None,
    ) -> None:
        self.s = settings
        self.run_id = uuid.uuid4().hex[:12]
        self.metrics = PipelineMetrics()
        self.clock = WallClock()
        self.notifier = notifier or SystemdNotifier(address="")
        self._on_item_hook = on_item
        self._on_actuation_hook = on_actuation
        self._classifier_model = classifier
        self._slot = FrameSlot()
        self._worker_done = threading.Event()
        self._stop_stats = threading.Event()
        self._stopped = False
        self._results_lock = threading.Lock()
        self._last_frame_alert = -1e9
        self._alert_seq = 0
        # Recent history for callers and tests; bounded, since the service runs for months.
        self.items: deque[ItemEvent] = deque(maxlen=RECENT_HISTORY)
        self.actuations: deque[ActuationResult] = deque(maxlen=RECENT_HISTORY)
        self.alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_HISTORY)
        self.serial_state = "disabled" if not settings.serial.enabled else "connecting"
        self.publisher: EventPublisher | None = None
        self.actuator: SerialActuator | None = None
        self.classifier: ItemClassifier | None = None
        self.processor: FrameProcessor | None = None
        self.capture: CaptureThread | None = None
        self.health: HealthMonitor | None = None
        self.collector: CropCollector | None = None
        self.reloader: ModelReloader | None = None
        self.scheduler = ActuationScheduler(
            fire=self._fire, on_missed=self._on_actuation_result, late_tolerance_s=settings.serial.max_late_ms / 1000
        )
        self._worker = threading.Thread(target=self._work, name="worker", daemon=True)
        self._stats_thread = threading.Thread(target=self._stats_loop, name="stats", daemon=True)

    # --- life cycle ---------------------------------------------------------------------------
    def start(self, serial_wait_s: float = 0.0) -> Pipeline:
        """Start every thread; with ``serial_wait_s`` > 0 wait that long for the controller before capturing."""
        s = self.s
        self.notifier.status("loading model")
        model = self._classifier_model if self._classifier_model is not None else load_model(s.classify)
        self.classifier = ItemClassifier(s.classify, model, s.class_to_gate, s.reject_gate)
        self.classifier.warm_up(max_batch=max(4, 2 * s.classify.views))  # two items' views in one frame
        path = model_file(s.classify) if self._classifier_model is None or s.classify.model_path else None
        active = describe(model, path, file_checksum(path) if path else "in-memory")
        self.reloader = ModelReloader(s.classify, self.classifier, active, self._on_model_change, self.alert)
        if s.collect.enabled:
            self.collector = CropCollector(s.collect, s.mqtt.line_id, on_alert=self.alert).start()
        self.processor = FrameProcessor(s, self.classifier, self.metrics, self.run_id, self.clock, self.alert,
                                        on_decided=self._collect if self.collector else None)
        unmapped = self.classifier.unmapped_classes()
        if unmapped:
            log.warning("classes_without_gate", classes=unmapped, route="reject")
        unknown = sorted(set(s.class_to_gate) - set(self.classifier.class_names))
        if unknown:
            log.warning("class_to_gate_unknown_classes", classes=unknown, model_classes=self.classifier.class_names)
        if s.mqtt.enabled:
            self.publisher = EventPublisher(s.mqtt, on_link=self._on_broker_link).start()
        self._on_model_change(active, None)
        if s.serial.enabled:
            self.actuator = SerialActuator(
                s.serial, max(s.gates), on_result=self._on_actuation_result, on_link=self._on_serial_link,
                servo_rest=s.servo_rest_angles(), on_alert=self.alert,
            ).start()
            if serial_wait_s > 0 and not self.actuator.wait_connected(serial_wait_s):
                log.warning("serial_not_ready", port=s.serial.port, waited_s=serial_wait_s)
        self.scheduler.start()
        self.capture = CaptureThread(s.camera, self._slot, self.metrics, on_alert=self.alert).start()
        self._worker.start()
        self._stats_thread.start()
        interval = watchdog_interval_s()
        if interval is not None or self.notifier.enabled:
            self.health = HealthMonitor(
                self.metrics, self.notifier, interval or 5.0, on_alert=self.alert, status=self.status_line
            ).start()
        log.info("pipeline_started", run=self.run_id, source=s.camera.source, classes=self.classifier.class_names)
        return self

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the camera and (if enabled) the serial port are up: the READY=1 condition."""
        end = time.monotonic() + timeout_s
        assert self.capture is not None
        if not self.capture.opened.wait(timeout_s):
            return False
        if self.actuator is not None:
            return self.actuator.wait_connected(max(0.0, end - time.monotonic()))
        return True

    def capture_opened(self) -> bool:
        return self.capture is not None and self.capture.opened.is_set()

    def wait_source_done(self, timeout_s: float | None = None) -> bool:
        """Block until the source ended (file played to the end, or capture given up)."""
        return self._worker_done.wait(timeout_s)

    def stop(self, drain_timeout_s: float | None = None) -> RunSummary:
        """Orderly stop: no new frames, fire the scheduled actuations, flush MQTT, publish ``stopped``.

        Scheduled actuations are fired at their due time if it comes within ``drain_timeout_s`` (default:
        the longest gate distance / belt speed + 0.5 s, so every item already decided reaches its gate);
        any left are reported with error ``shutdown`` (published and counted), never dropped silently.
        """
        if self._stopped:
            return self.summary()
        self._stopped = True
        self.notifier.stopping("stopping: finishing scheduled actuations")
        if self.capture is not None:
            self.capture.stop()
        self._worker.join(timeout=10)
        s = self.s
        if drain_timeout_s is None:
            drain_timeout_s = max(g.distance_mm for g in s.gates.values()) / s.belt.speed_mm_s + 0.5
        self.scheduler.stop(drain_timeout_s=drain_timeout_s)
        if self.actuator is not None:
            self.actuator.close(ack_wait_s=1.0)
        if self.health is not None:
            self.health.stop()
        if self.collector is not None:
            self.collector.stop()
        self._stop_stats.set()
        self._stats_thread.join(timeout=2)
        summary = self.summary()
        if self.publisher is not None:
            self.publisher.publish("stats", self.stats_payload())
            self.publisher.stop()
            summary = replace(summary, mqtt_undelivered=self.publisher.pending())
        log.info("pipeline_stopped", **summary.as_dict())
        return summary

    # --- status & stats -----------------------------------------------------------------------
    def broker_state(self) -> str:
        if self.publisher is None:
            return "disabled"
        return "connected" if self.publisher.connected else "disconnected"

    def status_line(self) -> str:
        m = self.metrics
        return (
            f"sorting: {m.items} items, {m.dropped_frames} dropped frames, "
            f"serial {self.serial_state}, broker {self.broker_state()}"
        )

    def stats_payload(self) -> dict[str, Any]:
        payload = stats_payload(
            self.metrics, self.run_id, self.serial_state, self.broker_state(),
            self.publisher.pending() if self.publisher else 0,
            serial_malformed_lines=self.actuator.malformed_lines if self.actuator else 0,
            controller_resets=self.actuator.resets if self.actuator else 0,
        )
        if self.reloader is not None:
            payload["model_checksum"] = self.reloader.active.checksum
        return payload | (self.collector.stats() if self.collector is not None else {})

    # --- model and collection (docs/site-data.md) -----------------------------------------------
    def reload_model(self) -> bool:
        """Load the model file again in the background (SIGHUP); False if a reload is already running."""
        return self.reloader is not None and self.reloader.request()

    def _on_model_change(self, active: ActiveModel, previous: str | None) -> None:
        """Publish (retained) and log the live model: at start and after every reload."""
        payload = active.payload(self.run_id, "start" if previous is None else "reload", previous)
        log.info("model_active", **{k: v for k, v in payload.items() if k != "run"})
        if self.publisher is not None:
            self.publisher.publish("model", payload, retain=True)

    def _collect(self, event: ItemEvent, crops: list[Any]) -> None:
        if self.collector is not None and self.reloader is not None:
            self.collector.submit(event, crops, self.reloader.active.checksum)

    def summary(self) -> RunSummary:
        return run_summary(self.metrics)

    def _stats_loop(self) -> None:
        interval = self.s.mqtt.stats_interval_s
        while not self._stop_stats.wait(interval):
            payload = self.stats_payload()
            log.info("stats", **{k: v for k, v in payload.items() if k not in ("run", "time")})
            if self.publisher is not None:
                self.publisher.publish("stats", payload)

    # --- events -------------------------------------------------------------------------------
    def alert(self, kind: str, message: str) -> None:
        with self._results_lock:
            self._alert_seq += 1
            payload = alert_payload(kind, message, self.run_id, self._alert_seq)
            self.alerts.append(payload)
        (log.info if payload["severity"] == "info" else log.warning)("alert", kind=kind, message=message)
        if self.publisher is not None:
            self.publisher.publish("alerts", payload)

    def _on_serial_link(self, up: bool, detail: str) -> None:
        was = self.serial_state
        self.serial_state = "connected" if up else "disconnected"
        if up and was == "disconnected":
            self.alert("serial_restored", detail)
        elif not up:
            self.alert("serial_lost", detail)

    def _on_broker_link(self, up: bool, detail: str) -> None:
        # The publisher reports "up" only after a reported loss, once the queued alerts (broker_lost
        # among them) have gone out, so broker_restored follows them.
        self.alert("broker_restored" if up else "broker_lost", detail)

    def _fire(self, request: ActuationRequest) -> None:
        if self.actuator is not None:
            self.actuator.fire(request)
        else:
            self._on_actuation_result(ActuationResult(request, sent=time.monotonic(), error="serial_disabled"))

    def _on_actuation_result(self, r: ActuationResult) -> None:
        m = self.metrics
        with self._results_lock:
            self.actuations.append(r)
            if r.error is None:
                m.actuations_ok += 1
            else:
                m.actuation_errors[r.error] += 1
        if r.sent is not None:
            m.fire_error.add(abs(r.sent - r.request.due))
        payload = actuation_payload(r, self.run_id, self.clock)
        if r.error is not None:
            log.warning("actuation_failed", **payload)
        if self.publisher is not None:
            self.publisher.publish("actuations", payload)
        if self._on_actuation_hook is not None:
            self._on_actuation_hook(r)

    # --- worker -------------------------------------------------------------------------------
    def _report_item(self, event: ItemEvent) -> None:
        with self._results_lock:
            self.items.append(event)
        if self.publisher is not None:
            self.publisher.publish("items", event.payload())
        log.info("item", id=event.id, label=event.label, confidence=event.confidence, decision=event.decision,
                 reason=event.reject_reason, gate=event.gate, latency_ms=event.latency_ms)
        if self._on_item_hook is not None:
            self._on_item_hook(event)

    def _work(self) -> None:
        assert self.processor is not None
        try:
            while True:
                frame = self._slot.get(timeout_s=0.2)
                if frame is None:
                    if self._slot.closed:
                        return
                    continue
                t0 = time.perf_counter()
                if self.metrics.first_frame is None:
                    self.metrics.first_frame = frame.t_capture
                self.metrics.last_frame = frame.t_capture
                try:
                    for event, request in self.processor.process(frame):
                        self._report_item(event)
                        self.scheduler.schedule(request)
                except Exception as e:  # a bad frame must not stop the line
                    log.exception("frame_failed", frame=frame.index)
                    self.metrics.bad_frames += 1
                    if time.monotonic() - self._last_frame_alert > FRAME_ALERT_INTERVAL_S:  # no alert flood
                        self._last_frame_alert = time.monotonic()
                        self.alert("frame_failed", f"frame {frame.index}: {type(e).__name__}: {e}")
                self.metrics.frame_processing.add(time.perf_counter() - t0)
                self.metrics.processed.tick()
        finally:
            self._worker_done.set()


def run_pipeline(
    settings: Settings,
    classifier: Classifier | None = None,
    on_item: Callable[[ItemEvent], None] | None = None,
    on_actuation: Callable[[ActuationResult], None] | None = None,
    stop_event: threading.Event | None = None,
    timeout_s: float | None = None,
    ready_timeout_s: float = 10.0,
) -> RunSummary:
    """Run the whole pipeline on ``settings.camera.source`` until it ends (or ``stop_event``/timeout).

    Waits up to ``ready_timeout_s`` for the serial controller before the first frame
    counts, so that a run on a file measures the pipeline, not the handshake.
    """
    p = Pipeline(settings, classifier=classifier, on_item=on_item, on_actuation=on_actuation)
    p.start(serial_wait_s=ready_timeout_s)
    try:
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while not p.wait_source_done(0.1):
            if stop_event is not None and stop_event.is_set():
                break
            if end is not None and time.monotonic() > end:
                log.warning("run_pipeline_timeout", timeout_s=timeout_s)
                break
    finally:
        summary = p.stop()
    return summary
