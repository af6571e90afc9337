"""Belt step: belt speed from a video of the moving belt (phase correlation) or from encoder counts.

Consecutive frames of the belt region (cropped and rotated as the daemon does) are
phase-correlated; the shift along the direction of travel over the time between the
frames (container timestamps for videos, the clock for live cameras) over px_per_mm is
the speed. The belt needs texture (or a marker/newspaper on it) for the correlation to lock.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.camera import Region, check_region, crop_region
from calibration.errors import CalibrationError
from calibration.sources import TimedFrame

MIN_SPEED_MM_S = 1.0  # below this the belt is standing still (or the measurement failed)
MIN_RESPONSE = 0.05  # phase-correlation peak below this: nothing to lock on
MAX_DRIFT_DEG = 15.0  # motion further off the region's x axis: the belt runs across it (belt.rotate unset)
MAX_SPREAD = 0.5  # std of the per-interval speeds above this share of the speed: no steady belt was measured


@dataclass(frozen=True)
class SpeedResult:
    """Belt speed and its spread over the measurement; ``speed_mm_s`` goes to belt.speed_mm_s."""

    method: str  # "video" or "encoder"
    speed_mm_s: float  # total distance / total time
    std_mm_s: float  # spread of the per-interval speeds
    min_mm_s: float
    max_mm_s: float
    intervals: int
    duration_s: float
    px_per_frame: float | None = None  # video only: mean shift between consecutive frames
    drift_deg: float | None = None  # video only: angle of the motion against the region's x axis
    rejected_intervals: int = 0
    frames: int | None = None  # video only: frames read
    warnings: list[str] = field(default_factory=list)


def _summarise(
    method: str, distances_mm: np.ndarray, durations_s: np.ndarray, warnings: list[str], **extra: float | int | None
) -> SpeedResult:
    speeds = distances_mm / durations_s
    total = float(distances_mm.sum() / durations_s.sum())
    if abs(total) < MIN_SPEED_MM_S:
        raise CalibrationError(
            f"measured belt speed {total:.2f} mm/s: the belt is not moving (or there is nothing to track); "
            "refusing to write it"
        )
    if total < 0:
        raise CalibrationError(
            f"the belt moves backwards in the region ({total:.1f} mm/s): items must travel left to right "
            "after rotation; change belt.rotate (e.g. 0 <-> 180)"
        )
    std = float(speeds.std())
    if std > MAX_SPREAD * total:
        raise CalibrationError(
            f"the speed varies by {std / total * 100:.0f}% (std) between frames: no steady belt motion was measured; "
            "check the belt texture (put a marker or newspaper on it), the region (--region / belt.region), "
            "belt.rotate, and that the belt ran at constant speed; refusing to write it"
        )
    if std > 0.1 * total:
        warnings.append(f"speed varies by {std / total * 100:.0f}% (std): belt slipping, jerky drive or poor texture?")
    return SpeedResult(
        method=method,
        speed_mm_s=total,
        std_mm_s=std,
        min_mm_s=float(speeds.min()),
        max_mm_s=float(speeds.max()),
        intervals=len(speeds),
        duration_s=float(durations_s.sum()),
        warnings=warnings,
        **extra,  # type: ignore[arg-type]
    )


def unbiased_size(n: int) -> int:
    """Largest even n' <= n that cv2.getOptimalDFTSize leaves as it is.

    cv2.phaseCorrelate pads each side to getOptimalDFTSize; when that size is odd (75, 225, 625 ...)
    its sub-pixel peak is biased by half a pixel (a 625 px wide region read 2.6% fast, a 225 px
    high one drifted 0.6 deg). Correlating a centred crop of an even, DFT-optimal size avoids it.
    """
    m = n - (n % 2)
    while m > 2 and cv2.getOptimalDFTSize(m) != m:
        m -= 2
    return max(m, 2)


def _analysed(grey: np.ndarray) -> np.ndarray:
    """The centred part of ``grey`` that phase correlation sees without bias (see ``unbiased_size``)."""
    h, w = grey.shape[:2]
    nh, nw = unbiased_size(h), unbiased_size(w)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    return np.ascontiguousarray(grey[y0 : y0 + nh, x0 : x0 + nw])


def speed_from_frames(
    frames: Iterable[TimedFrame], region: Region | None, rotate: int, px_per_mm: float
) -> SpeedResult:
    """Track the belt texture inside the (rotated) belt region by phase correlation.

    Each frame is correlated with a key frame that is only replaced once the belt has moved a
    quarter of the region: cv2.phaseCorrelate's sub-pixel estimate is biased by up to ~0.1 px,
    which over a long baseline is negligible but over a single frame's shift is not.
    """
    if px_per_mm <= 0:
        raise CalibrationError(f"px_per_mm must be positive (run 'calibrate scale' first), got {px_per_mm}")
    key: np.ndarray | None = None
    key_pos = np.zeros(2)
    window: np.ndarray | None = None
    max_shift = 0.0
    positions: list[np.ndarray] = []  # belt position (px) of each frame of the current segment
    times: list[float] = []
    steps: list[np.ndarray] = []  # (dx, dy) between consecutive frames
    dts: list[float] = []
    rejected = 0
    seen = 0
    for f in frames:
        if region is not None and seen == 0:
            check_region(region, f.image.shape)
        seen += 1
        crop = crop_region(f.image, region, rotate) if region is not None else f.image
        grey = _analysed(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32))
        if window is None:
            window = cv2.createHanningWindow((grey.shape[1], grey.shape[0]), cv2.CV_32F)
            max_shift = min(grey.shape[:2]) / 4
        if key is not None:
            (dx, dy), response = cv2.phaseCorrelate(key, grey, window)
            dt = f.t_s - times[-1]
            if dt > 0 and response >= MIN_RESPONSE:
                pos = key_pos + np.array([dx, dy])
                steps.append(pos - positions[-1])
                dts.append(dt)
                positions.append(pos)
                times.append(f.t_s)
                if abs(dx) > max_shift or abs(dy) > max_shift:
                    key, key_pos = grey, pos
                continue
            rejected += 1  # lost track: start a new segment from this frame
        key, key_pos = grey, np.zeros(2)
        positions, times = [key_pos], [f.t_s]
    if seen == 0:
        raise CalibrationError("the video delivered no frame")
    if len(steps) < 2:
        raise CalibrationError(
            f"only {len(steps)} usable frame pairs ({rejected} rejected): the belt needs texture or a marker, "
            "and the video at least 3 frames"
        )
    if rejected > len(steps):
        raise CalibrationError(
            f"{rejected} of {rejected + len(steps)} frame pairs had nothing to lock on: put a marker or "
            "newspaper on the belt"
        )
    arr = np.array(steps)
    dt_arr = np.array(dts)
    warnings: list[str] = []
    drift = math.degrees(math.atan2(arr[:, 1].sum(), arr[:, 0].sum()))
    across = math.degrees(math.atan2(abs(arr[:, 1].sum()), abs(arr[:, 0].sum())))
    moving = math.hypot(arr[:, 0].sum(), arr[:, 1].sum()) / px_per_mm / dt_arr.sum() >= MIN_SPEED_MM_S
    if moving and across > MAX_DRIFT_DEG:
        raise CalibrationError(
            f"the belt moves {across:.0f} deg across the region, not along it: set the direction of travel "
            "with --rotate 90 or 270 (saved as belt.rotate) so items move left to right in the rotated "
            "region, or align the camera with the belt; refusing to write the speed"
        )
    if abs(drift) > 2.0 and across > 2.0:
        warnings.append(f"items drift {drift:.1f} deg across the region: align the camera with the belt")
    return _summarise(
        "video",
        arr[:, 0] / px_per_mm,
        dt_arr,
        warnings,
        px_per_frame=float(arr[:, 0].mean()),
        drift_deg=drift,
        rejected_intervals=rejected,
        frames=seen,
    )


def read_encoder_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two columns, time in seconds and cumulative encoder count; a header row is allowed."""
    times: list[float] = []
    counts: list[float] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if not row or row[0].strip().startswith("#"):
                    continue
                try:
                    t, c = float(row[0]), float(row[1])
                except (ValueError, IndexError):
                    if times:
                        raise CalibrationError(f"{path}: bad row {row!r} (expected: time_s,count)") from None
                    continue  # header
                times.append(t)
                counts.append(c)
    except FileNotFoundError:
        raise CalibrationError(f"encoder file not found: {path}") from None
    return np.array(times), np.array(counts)


def speed_from_encoder(times_s: np.ndarray, counts: np.ndarray, mm_per_count: float) -> SpeedResult:
    """Speed between consecutive encoder samples."""
    if mm_per_count <= 0:
        raise CalibrationError(f"--mm-per-count must be positive, got {mm_per_count}")
    if len(times_s) < 3:
        raise CalibrationError("need at least 3 encoder samples (time_s,count)")
    dt = np.diff(times_s)
    if np.any(dt <= 0):
        raise CalibrationError("encoder sample times must increase strictly")
    return _summarise("encoder", np.diff(counts) * mm_per_count, dt, [])
