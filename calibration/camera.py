"""Camera step: belt region, empty-belt background, image quality, exposure/white-balance lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.errors import CalibrationError
from calibration.preview import Preview
from calibration.sources import FrameSource
from daemon.camera_controls import ControlReport, ControlValue, PropertyDevice, apply_controls

Region = tuple[int, int, int, int]  # x, y, width, height in pixels, as belt.region
MIN_REGION_PX = 16  # the daemon's own lower bound for belt.region width and height
MIN_BRIGHTNESS = 15.0  # mean grey level of the background below this: no usable image (cap on, lights off)
MAX_BRIGHTNESS = 245.0  # ... above this: blown out
MIN_CONTRAST = 2.0  # grey-level std below this: a flat colour, not a belt (a test pattern, a dead camera)
_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def parse_region(text: str) -> Region:
    """``"x,y,w,h"`` -> tuple of four ints, or a refusal saying what the format is."""
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise CalibrationError(f"region must be x,y,width,height in pixels (e.g. 0,120,640,240), got {text!r}") from None
    return (x, y, w, h)


def check_region(region: Region, frame_shape: tuple[int, ...]) -> Region:
    """Refuse a region that leaves the frame or is smaller than the daemon accepts."""
    x, y, w, h = region
    fh, fw = frame_shape[:2]
    if w < MIN_REGION_PX or h < MIN_REGION_PX:
        raise CalibrationError(f"region {region} is too small: width and height must be at least {MIN_REGION_PX} px")
    if x < 0 or y < 0 or x + w > fw or y + h > fh:
        raise CalibrationError(f"region {region} (x, y, width, height) lies outside the {fw}x{fh} image")
    return region


def crop_region(image: np.ndarray, region: Region, rotate: int = 0) -> np.ndarray:
    """The belt region exactly as the daemon sees it: cropped, then rotated by belt.rotate."""
    x, y, w, h = region
    crop = image[y : y + h, x : x + w]
    return cv2.rotate(crop, _ROTATIONS[rotate]) if rotate else crop


def median_background(crops: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median: items passing in fewer than half of the frames vanish from the result."""
    if not crops:
        raise CalibrationError("no frames captured for the background")
    return np.median(np.stack(crops), axis=0).round().astype(np.uint8)


@dataclass(frozen=True)
class ImageQuality:
    """Focus and exposure figures of the belt region; ``warnings`` says what a technician should fix."""

    sharpness: float  # variance of the Laplacian of the grey image (higher = sharper)
    brightness: float  # mean grey level 0..255
    dark_clipped_pct: float  # share of pixels at 0..2
    bright_clipped_pct: float  # share of pixels at 253..255
    warnings: list[str] = field(default_factory=list)


def measure_quality(image: np.ndarray, min_sharpness: float = 50.0) -> ImageQuality:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    brightness = float(grey.mean())
    dark = float((grey <= 2).mean() * 100)
    bright = float((grey >= 253).mean() * 100)
    warnings = []
    if sharpness < min_sharpness:
        warnings.append(f"low sharpness {sharpness:.0f} (< {min_sharpness:.0f}): focus the lens or add belt texture")
    if brightness < 50:
        warnings.append(f"dark image (mean {brightness:.0f}/255): more light or a longer exposure")
    if brightness > 205:
        warnings.append(f"bright image (mean {brightness:.0f}/255): less light or a shorter exposure")
    if dark > 1.0:
        warnings.append(f"{dark:.1f}% of pixels clipped black")
    if bright > 1.0:
        warnings.append(f"{bright:.1f}% of pixels clipped white (reflections?)")
    return ImageQuality(sharpness, brightness, dark, bright, warnings)


def lock_controls(
    cap: PropertyDevice, exposure: float | None, white_balance_k: float | None
) -> tuple[dict[str, ControlValue], list[ControlReport]]:
    """Switch auto exposure / auto white balance off and pin the values (current ones when None).

    Uses the daemon's own control code (daemon.camera_controls), which re-applies the saved values
    at every camera open. Returns the controls requested (named as in [camera]) and the read-back of each.
    """
    wb = white_balance_k if white_balance_k is not None else float(cap.get(cv2.CAP_PROP_WB_TEMPERATURE))
    wanted: dict[str, ControlValue] = {
        "auto_exposure": False,
        "exposure": exposure if exposure is not None else float(cap.get(cv2.CAP_PROP_EXPOSURE)),
        "auto_white_balance": False,
    }
    if wb > 0:  # a driver without a colour temperature control reports 0 or -1: nothing to pin
        wanted["white_balance_temperature"] = wb
    return wanted, apply_controls(cap, wanted)


@dataclass(frozen=True)
class CameraResult:
    """Outcome of the camera step; ``background_path`` is what detect.background_image should name."""

    source: str
    frame_width: int
    frame_height: int
    region: Region
    rotate: int
    frames_used: int
    background_path: Path | None
    quality: ImageQuality
    controls: list[ControlReport]
    controls_note: str | None
    camera_settings: dict[str, ControlValue]  # [camera] keys to save: resolution and the controls the driver took
    warnings: list[str] = field(default_factory=list)  # image quality and capture problems, for the technician


def refuse_nonsense(background: np.ndarray, quality: ImageQuality) -> None:
    """Refuse a background no belt looks like: black, blown out or a flat colour (cap on, lights off, wrong camera)."""
    grey = cv2.cvtColor(background, cv2.COLOR_BGR2GRAY) if background.ndim == 3 else background
    check = "check the lens cap, the belt lights, --source (the right camera?) and the exposure"
    if quality.brightness < MIN_BRIGHTNESS:
        raise CalibrationError(f"the belt region is black (mean {quality.brightness:.0f}/255): {check}")
    if quality.brightness > MAX_BRIGHTNESS:
        raise CalibrationError(f"the belt region is white (mean {quality.brightness:.0f}/255): {check}")
    if float(grey.std()) < MIN_CONTRAST:
        raise CalibrationError(f"the belt region is one flat colour (std {grey.std():.1f} grey levels): {check}")


def calibrate_camera(
    source: FrameSource,
    region: Region | None,
    *,
    rotate: int = 0,
    frames: int = 30,
    background_path: Path | None,
    lock: bool = False,
    exposure: float | None = None,
    white_balance_k: float | None = None,
    preview: Preview | None = None,
) -> tuple[CameraResult, np.ndarray]:
    """Run the camera step on an open source; ``region`` None means pick it in the preview window.

    Writes nothing: returns the result and the background image, which the caller saves together with
    the config once the new config has passed validation (``background_path`` is only recorded).
    """
    if frames < 1:
        raise CalibrationError("--frames must be at least 1")
    controls: list[ControlReport] = []
    note: str | None = None
    to_save: dict[str, ControlValue] = {}
    if lock or exposure is not None or white_balance_k is not None:
        if source.kind == "camera" and source.capture is not None:
            wanted, controls = lock_controls(source.capture, exposure, white_balance_k)
            to_save = {c.name: wanted[c.name] for c in controls if c.applied}
            ignored = [c.name for c in controls if not c.applied]
            if ignored:
                note = "the camera driver ignored: " + ", ".join(ignored) + " (not saved)"
        else:
            note = f"{source.kind} source: exposure and white balance cannot be locked (only on a live camera)"
    images = [f.image for f in source.frames(limit=frames)]
    if not images:
        raise CalibrationError(f"{source.source!r} delivered no frame")
    shape = images[0].shape
    if source.kind == "camera":  # belt.region is in pixels of this resolution: keep the camera at it
        to_save = {"width": int(shape[1]), "height": int(shape[0]), **to_save}
    if region is None:
        picked = preview.select_region(images[-1]) if preview is not None else None
        if picked is None:
            why = preview.reason if preview is not None and preview.reason else "no preview window"
            raise CalibrationError(f"no belt region: pass --region x,y,width,height ({why})")
        region = picked
    check_region(region, shape)
    crops = [crop_region(img, region, rotate) for img in images if img.shape == shape]
    background = median_background(crops)
    quality = measure_quality(background)
    refuse_nonsense(background, quality)
    warnings = list(quality.warnings)
    if len(images) < frames:
        warnings.append(f"asked for {frames} frames, {source.source} delivered only {len(images)}: "
                        "the background is the median of those")
    if preview is not None and preview.available:
        shown = images[-1].copy()
        x, y, w, h = region
        cv2.rectangle(shown, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), 2)
        preview.show(shown, wait_ms=1500)
    result = CameraResult(
        source=source.source,
        frame_width=int(shape[1]),
        frame_height=int(shape[0]),
        region=region,
        rotate=rotate,
        frames_used=len(crops),
        background_path=background_path,
        quality=quality,
        controls=controls,
        controls_note=note,
        camera_settings=to_save,
        warnings=warnings,
    )
    return result, background
