"""Turns one captured frame into item decisions: validate, crop, detect, track, classify, time the gate.

It does no I/O: the pipeline publishes the events and schedules the requests it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np

from daemon.actuation import ActuationRequest
from daemon.capture import Frame
from daemon.classify import ItemClassifier
from daemon.detect import BeltDetector
from daemon.events import ItemEvent, WallClock
from daemon.metrics import PipelineMetrics
from daemon.schedule import firing_time
from daemon.settings import REJECT_BIN, Settings
from daemon.track import BeltTracker, ReadyItem

_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


class FrameProcessor:
    """Stateful per camera (background model, tracks); call process() once per frame, in capture order."""

    def __init__(
        self,
        settings: Settings,
        classifier: ItemClassifier,
        metrics: PipelineMetrics,
        run_id: str,
        clock: WallClock,
        on_alert: Callable[[str, str], None],
        on_decided: Callable[[ItemEvent, list[np.ndarray]], None] | None = None,
    ) -> None:
        self.s = settings
        self._on_decided = on_decided  # sees each item's event with the crops it was classified on
        self.classifier = classifier
        self.metrics = metrics
        self.run_id = run_id
        self.clock = clock
        self._on_alert = on_alert
        self._region = settings.belt.region
        self._expected_shape: tuple[int, ...] | None = None
        self._region_alerted = False
        self.detector = BeltDetector(settings.detect)
        self.tracker = BeltTracker(
            settings.track,
            speed_px_s=settings.belt.speed_mm_s * settings.belt.px_per_mm,
            region_width=settings.belt.length_px,
            edge_margin_px=settings.detect.edge_margin_px,
            crop_padding_px=settings.classify.crop_padding_px,
            views=settings.classify.views,
            view_spacing_px=settings.classify.view_spacing_mm * settings.belt.px_per_mm,
            max_wait_s=settings.classify.max_view_wait_ms / 1000,
        )

    def process(self, frame: Frame) -> list[tuple[ItemEvent, ActuationRequest]]:
        """Items decided in this frame with their gate commands; [] for most frames."""
        if not self._valid(frame.image):
            self.metrics.bad_frames += 1
            return []
        x, y, w, h = self._region
        region = frame.image[y : y + h, x : x + w]  # a view: no copy
        if self.s.belt.rotate:
            region = cv2.rotate(region, _ROTATIONS[self.s.belt.rotate])
        detections = self.detector.detect(region)
        ready = self.tracker.update(detections, frame.t_belt, frame.index, region, t_capture=frame.t_capture)
        self.metrics.lost_tracks = self.tracker.lost
        self.metrics.merged_tracks = self.tracker.merged
        return self._decide(ready) if ready else []

    def _valid(self, image: np.ndarray) -> bool:
        """Right type, 3 channels, holds the belt region, same size as the first good frame."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            return False
        x, y, w, h = self._region
        if image.shape[0] < y + h or image.shape[1] < x + w:
            if not self._region_alerted:
                self._region_alerted = True
                self._on_alert("region_outside_frame", f"belt region {self._region} does not fit frame {image.shape}")
            return False
        if self._expected_shape is None:
            self._expected_shape = image.shape
        return image.shape == self._expected_shape

    def _decide(self, ready: list[ReadyItem]) -> list[tuple[ItemEvent, ActuationRequest]]:
        decisions = self.classifier.decide_views([r.all_crops for r in ready])  # one batch per frame
        t_decided = time.monotonic()
        m = self.metrics
        m.inference.add(self.classifier.last_inference_s)
        s = self.s
        out = []
        for item, d in zip(ready, decisions):
            gate = s.gates[d.gate]
            position_mm = item.det.cx / s.belt.px_per_mm
            due = firing_time(item.t_capture, position_mm, gate.distance_mm, s.belt.speed_mm_s, gate.lead_time_ms)
            event = ItemEvent(
                id=item.track_id,
                run=self.run_id,
                frame=item.frame_index,
                t_capture=round(item.t_capture, 6),
                captured_at=self.clock.unix(item.t_capture) or 0.0,
                label=d.label,
                confidence=d.confidence,
                scores=d.scores,
                unknown=d.unknown,
                decision=d.action,
                reject_reason=d.reason,
                gate=d.gate,
                position_mm=round(position_mm, 2),
                due=round(due, 6),
                latency_ms=round((t_decided - item.t_capture) * 1000, 3),
                partial_view=item.partial,
            )
            m.items += 1
            m.per_class[d.label] += 1
            if d.action == "sort":
                m.sorted += 1
            else:
                m.rejects[d.reason or "other"] += 1
            m.decision.add(t_decided - item.t_capture)
            if self._on_decided is not None:
                self._on_decided(event, list(item.all_crops))  # every view the decision was made on
            angle = gate.angle_for(d.label if d.action == "sort" else REJECT_BIN)  # None: not a servo gate
            out.append((event, ActuationRequest(item.track_id, d.gate, gate.pulse_ms, due, angle)))
        return out
