"""The JSON payloads the daemon publishes (docs/mqtt.md), built from pipeline records."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from daemon.actuation import ActuationResult


class WallClock:
    """Converts time.monotonic() stamps to Unix time for humans, with one offset per run."""

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()

    def unix(self, t_mono: float | None) -> float | None:
        return None if t_mono is None else round(t_mono + self.offset, 4)


@dataclass(frozen=True)
class ItemEvent:
    """One classified item: what it is, what was decided and how long the decision took."""

    id: int
    run: str
    frame: int
    t_capture: float  # time.monotonic() at capture
    captured_at: float  # Unix time at capture
    label: str
    confidence: float
    scores: dict[str, float]
    unknown: float
    decision: str  # "sort" | "reject"
    reject_reason: str | None  # low_confidence | unknown | unmapped
    gate: int
    position_mm: float
    due: float  # time.monotonic() the gate is scheduled to fire
    latency_ms: float  # capture -> decision
    partial_view: bool

    def payload(self) -> dict[str, Any]:
        return asdict(self)


def actuation_payload(r: ActuationResult, run: str, clock: WallClock) -> dict[str, Any]:
    req = r.request
    return {
        "run": run,
        "id": req.item_id,
        "gate": req.gate,
        "duration_ms": req.duration_ms,
        "due": round(req.due, 6),
        "due_at": clock.unix(req.due),
        "sent_at": clock.unix(r.sent),
        "acked_at": clock.unix(r.acked),
        "timing_error_ms": None if r.sent is None else round((r.sent - req.due) * 1000, 3),
        "seq": r.seq,
        "attempts": r.attempts,
        "acknowledged": r.error is None and r.acked is not None,
        "error": r.error,
    }


def alert_payload(kind: str, message: str, run: str, seq: int = 0) -> dict[str, Any]:
    """``seq`` numbers a run's alerts in the order they were raised: alerts queued during a broker
    outage can then be put in order by a consumer whatever order they were delivered in."""
    severity = "info" if kind.endswith(("_restored", "_recovered")) else "error"
    return {"run": run, "seq": seq, "time": round(time.time(), 3), "kind": kind, "severity": severity,
            "message": message}
