"""Data records for gate actuations, shared by the scheduler, the actuator and the event publisher."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActuationRequest:
    """Open ``gate`` for ``duration_ms`` at monotonic time ``due`` for item ``item_id``.

    ``angle`` set: a servo gate; it moves to that bin angle for ``duration_ms`` (SERVO instead of FIRE),
    and ``duration_ms`` 0 leaves it there as its new rest angle (calibration jog).
    """

    item_id: int
    gate: int
    duration_ms: int
    due: float
    angle: int | None = None


@dataclass(frozen=True)
class ActuationResult:
    """What happened to one request; ``error`` is None when the controller acknowledged it.

    Errors: deadline_missed, serial_down, serial_lost, controller_reset, ack_timeout, nak:<reason>, shutdown.
    """

    request: ActuationRequest
    sent: float | None = None
    acked: float | None = None
    seq: int | None = None
    attempts: int = 0
    error: str | None = None
