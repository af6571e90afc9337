"""Camera controls (resolution, frame rate, exposure, white balance) set on an open camera and read back.

V4L2 controls last only until the camera loses power, so the daemon's capture re-applies the
configured ``camera.*`` controls at every (re)open of a live camera, and ``wastesort calibrate
camera --lock`` uses the same functions to lock them. Drivers silently ignore controls they lack
(``set`` may even return True), so every value is read back and compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2

from daemon.settings import CameraSettings

# Setting name -> OpenCV property, in the order they are applied: the format first (changing it
# can reset the other controls), each auto mode before its manual value (drivers refuse a manual
# value while the auto mode is on).
PROPERTIES: dict[str, int] = {
    "width": cv2.CAP_PROP_FRAME_WIDTH,
    "height": cv2.CAP_PROP_FRAME_HEIGHT,
    "fps": cv2.CAP_PROP_FPS,
    "auto_exposure": cv2.CAP_PROP_AUTO_EXPOSURE,
    "exposure": cv2.CAP_PROP_EXPOSURE,
    "auto_white_balance": cv2.CAP_PROP_AUTO_WB,
    "white_balance_temperature": cv2.CAP_PROP_WB_TEMPERATURE,
}
# OpenCV's V4L2 backend maps CAP_PROP_AUTO_EXPOSURE two ways depending on its version:
# 1 = manual / 3 = auto (current), 0.25 = manual / 0.75 = auto (older). Try both.
AUTO_EXPOSURE_VALUES = {False: (1.0, 0.25), True: (3.0, 0.75)}

ControlValue = float | bool


class PropertyDevice(Protocol):
    """The part of cv2.VideoCapture that controls use."""

    def set(self, prop: int, value: float) -> bool: ...

    def get(self, prop: int) -> float: ...


@dataclass(frozen=True)
class ControlReport:
    """One control we tried to set (``name`` as in [camera]), and what the driver reported back."""

    name: str
    requested: float
    read_back: float
    applied: bool


def set_and_read(cap: PropertyDevice, prop: int, name: str, value: float) -> ControlReport:
    cap.set(prop, value)
    back = float(cap.get(prop))
    return ControlReport(name, value, back, abs(back - value) <= max(1e-3, abs(value) * 0.02))


def apply_control(cap: PropertyDevice, name: str, value: ControlValue) -> ControlReport:
    """Set one [camera] control by its setting name; booleans are the auto modes."""
    prop = PROPERTIES[name]
    if name == "auto_exposure":
        first, fallback = AUTO_EXPOSURE_VALUES[bool(value)]
        report = set_and_read(cap, prop, name, first)
        return report if report.applied else set_and_read(cap, prop, name, fallback)
    return set_and_read(cap, prop, name, float(value))


def configured_controls(settings: CameraSettings) -> dict[str, ControlValue]:
    """The controls the config sets (unset ones are left to the driver)."""
    return {name: getattr(settings, name) for name in PROPERTIES if getattr(settings, name) is not None}


def apply_controls(cap: PropertyDevice, controls: dict[str, ControlValue]) -> list[ControlReport]:
    """Set ``controls`` in the order of PROPERTIES and report each read-back."""
    return [apply_control(cap, name, controls[name]) for name in PROPERTIES if name in controls]


def describe_ignored(reports: list[ControlReport]) -> str | None:
    """One line naming every control the driver ignored, or None when all were applied."""
    ignored = [f"camera.{r.name} (requested {r.requested:g}, read back {r.read_back:g})"
               for r in reports if not r.applied]
    return "the camera driver ignored " + ", ".join(ignored) if ignored else None
