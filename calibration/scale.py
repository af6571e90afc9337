"""Scale step: pixels per millimetre on the belt plane from a chessboard of known square size.

The board lies flat on the belt. Its corners give a homography between the belt plane (mm)
and the image (px); the local scale along the belt's direction of travel at the board centre
is what the daemon's single ``belt.px_per_mm`` needs. With a tilted camera the scale varies
across the image: the step reports that variation. Optionally, several board views give the
lens intrinsics (calibrateCamera) and their RMS reprojection error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.camera import Region
from calibration.errors import CalibrationError

Pattern = tuple[int, int]  # inner corners: columns, rows
_FIND_FLAGS = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
GRID_POINTS = 5  # the scale is sampled on GRID_POINTS x GRID_POINTS points over the belt region
MAX_FOCAL_REL_STD = 0.05  # focal length known to worse than 5%: the views do not pin it down
MAX_DIST_STD = 0.5  # a distortion coefficient this uncertain (absolute) is noise, whatever its value
_DIST_NAMES = ("k1", "k2", "p1", "p2", "k3")
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.001)


def parse_pattern(text: str) -> Pattern:
    """``"9x6"`` (inner corners, columns x rows) -> (9, 6)."""
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CalibrationError(f"pattern must be COLSxROWS of inner corners (e.g. 9x6), got {text!r}") from None
    if cols < 2 or rows < 2:
        raise CalibrationError(f"pattern {text!r}: a chessboard needs at least 2x2 inner corners")
    return cols, rows


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def find_corners(image: np.ndarray, pattern: Pattern) -> np.ndarray | None:
    """Sub-pixel inner corners (N x 2, row by row) or None when the board is not found."""
    grey = _grey(image)
    found, corners = cv2.findChessboardCorners(grey, pattern, flags=_FIND_FLAGS)
    if not found:
        return None
    pts = corners.reshape(-1, 2)
    spacing = float(np.median(np.linalg.norm(np.diff(pts.reshape(pattern[1], pattern[0], 2), axis=1), axis=2)))
    win = int(np.clip(spacing * 0.4, 2, 11))  # stay inside one square: larger windows mix neighbouring corners
    refined = cv2.cornerSubPix(grey, corners, (win, win), (-1, -1), _SUBPIX_CRITERIA)
    return refined.reshape(-1, 2)


def board_points_mm(pattern: Pattern, square_mm: float) -> np.ndarray:
    """Board-plane coordinates (mm) of the inner corners, in findChessboardCorners' order."""
    cols, rows = pattern
    grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2).astype(np.float64)
    return grid * square_mm


def belt_axis(rotate: int) -> np.ndarray:
    """Unit vector in the camera image along which items travel, for a given belt.rotate."""
    return np.array([1.0, 0.0]) if rotate in (0, 180) else np.array([0.0, 1.0])


def local_px_per_mm(h_mm_to_px: np.ndarray, point_px: np.ndarray, axis: np.ndarray) -> float:
    """Image pixels per belt millimetre at ``point_px`` for a step along the image direction ``axis``."""
    h_inv = np.linalg.inv(h_mm_to_px)
    pts = np.array([[point_px - axis], [point_px + axis]], dtype=np.float64)
    mm = cv2.perspectiveTransform(pts, h_inv).reshape(2, 2)
    return 2.0 / float(np.linalg.norm(mm[1] - mm[0]))


@dataclass(frozen=True)
class ScaleResult:
    """Belt-plane scale from one board image; ``px_per_mm`` is the value for belt.px_per_mm."""

    px_per_mm: float  # along the direction of travel, at the board centre
    px_per_mm_across: float  # perpendicular to it, same point (differs when pixels are not square or the view is tilted)
    board_center_px: tuple[float, float]
    reprojection_rms_px: float  # board corners vs the fitted homography
    homography_mm_to_px: list[list[float]]
    scale_along_region: list[float]  # px_per_mm at the region's upstream edge, centre, downstream edge
    variation_pct: float  # (max - min) / mean of scale_grid: along and across the belt
    warnings: list[str]
    scale_grid: list[tuple[float, float, float]] = field(default_factory=list)  # (x, y, px_per_mm) over the region


def measure_scale(
    image: np.ndarray, pattern: Pattern, square_mm: float, *, region: Region | None = None, rotate: int = 0
) -> ScaleResult:
    if square_mm <= 0:
        raise CalibrationError(f"--square-mm must be positive, got {square_mm}")
    corners = find_corners(image, pattern)
    if corners is None:
        raise CalibrationError(
            f"no {pattern[0]}x{pattern[1]} chessboard (inner corners) found: check --pattern, "
            "lighting, focus, and that the whole board with a white margin is in view"
        )
    obj = board_points_mm(pattern, square_mm)
    h, _ = cv2.findHomography(obj, corners.astype(np.float64), 0)
    if h is None:
        raise CalibrationError("the board corners do not define a homography (degenerate view)")
    projected = cv2.perspectiveTransform(obj.reshape(-1, 1, 2), h).reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum((projected - corners) ** 2, axis=1))))
    centre_mm = obj.mean(axis=0)
    centre = cv2.perspectiveTransform(centre_mm.reshape(1, 1, 2), h).reshape(2)
    axis = belt_axis(rotate)
    across = axis[::-1].copy()
    along = local_px_per_mm(h, centre, axis)
    warnings: list[str] = []
    if region is not None:
        x, y, w, hh = region
        cy = y + hh / 2
        cx = x + w / 2
        if rotate in (0, 180):
            samples = [np.array([x, cy]), np.array([cx, cy]), np.array([x + w, cy])]
        else:
            samples = [np.array([cx, y]), np.array([cx, cy]), np.array([cx, y + hh])]
        along_region = [local_px_per_mm(h, p, axis) for p in samples]
        grid = [(float(gx), float(gy), local_px_per_mm(h, np.array([gx, gy]), axis))
                for gy in np.linspace(y, y + hh, GRID_POINTS) for gx in np.linspace(x, x + w, GRID_POINTS)]
        if not (x <= centre[0] <= x + w and y <= centre[1] <= y + hh):
            warnings.append(f"the board centre ({centre[0]:.0f}, {centre[1]:.0f}) is outside belt.region {region}")
    else:
        along_region = [along]
        grid = [(float(centre[0]), float(centre[1]), along)]
    values = [g[2] for g in grid]
    variation = (max(values) - min(values)) / float(np.mean(values)) * 100
    if variation > 2.0:
        lo, hi = min(grid, key=lambda g: g[2]), max(grid, key=lambda g: g[2])
        warnings.append(
            f"the scale varies by {variation:.1f}% over the belt region ({hi[2]:.3f} px/mm at ({hi[0]:.0f}, "
            f"{hi[1]:.0f}), {lo[2]:.3f} at ({lo[0]:.0f}, {lo[1]:.0f})): the camera looks at an angle; "
            "mount it square to the belt or expect position errors up to that share"
        )
    if rms > 1.0:
        warnings.append(f"corners fit the plane poorly (RMS {rms:.2f} px): is the board flat and the lens distorted?")
    return ScaleResult(
        px_per_mm=along,
        px_per_mm_across=local_px_per_mm(h, centre, across),
        board_center_px=(float(centre[0]), float(centre[1])),
        reprojection_rms_px=rms,
        homography_mm_to_px=h.tolist(),
        scale_along_region=along_region,
        variation_pct=variation,
        warnings=warnings,
        scale_grid=grid,
    )


@dataclass(frozen=True)
class IntrinsicsResult:
    """Pinhole camera matrix and distortion from several board views (cv2.calibrateCamera)."""

    image_width: int
    image_height: int
    views_used: int
    views_rejected: list[int]
    rms_px: float  # RMS reprojection error over all corners of all views
    camera_matrix: list[list[float]]
    dist_coeffs: list[float]
    std_intrinsics: list[float] = field(default_factory=list)  # fx, fy, cx, cy, k1, k2, p1, p2, k3 (1 sigma)
    warnings: list[str] = field(default_factory=list)  # poorly determined values: not to be trusted


def calibrate_intrinsics(images: Sequence[np.ndarray], pattern: Pattern, square_mm: float) -> IntrinsicsResult:
    """Needs at least 3 views with the board found, ideally tilted differently and covering the image."""
    obj2d = board_points_mm(pattern, square_mm)
    obj = np.hstack([obj2d, np.zeros((len(obj2d), 1))]).astype(np.float32)
    object_points: list[np.ndarray] = []
    image_points: list[np.ndarray] = []
    rejected: list[int] = []
    size: tuple[int, int] | None = None
    for i, img in enumerate(images):
        if size is None:
            size = (img.shape[1], img.shape[0])
        elif (img.shape[1], img.shape[0]) != size:
            raise CalibrationError(f"view {i} is {img.shape[1]}x{img.shape[0]}, the others {size[0]}x{size[1]}")
        corners = find_corners(img, pattern)
        if corners is None:
            rejected.append(i)
            continue
        object_points.append(obj)
        image_points.append(corners.astype(np.float32).reshape(-1, 1, 2))
    if len(object_points) < 3 or size is None:
        raise CalibrationError(
            f"lens intrinsics need the board found in at least 3 views, found in {len(object_points)} "
            f"of {len(images)}"
        )
    rms, k, dist, _, _, std, _, _ = cv2.calibrateCameraExtended(object_points, image_points, size, None, None)
    std_list = [float(v) for v in std.ravel()[: 4 + len(dist.ravel())]]
    return IntrinsicsResult(
        image_width=size[0],
        image_height=size[1],
        views_used=len(object_points),
        views_rejected=rejected,
        rms_px=float(rms),
        camera_matrix=k.tolist(),
        dist_coeffs=[float(v) for v in dist.ravel()],
        std_intrinsics=std_list,
        warnings=conditioning_warnings(k, dist.ravel(), std_list),
    )


def conditioning_warnings(k: np.ndarray, dist: np.ndarray, std: list[float]) -> list[str]:
    """Say which fitted values the views do not determine (OpenCV's 1-sigma uncertainties): a low RMS alone
    does not mean the values are right (flat views leave the focal length free, few views the distortion)."""
    out: list[str] = []
    for name, value, sigma in (("fx", k[0][0], std[0]), ("fy", k[1][1], std[1])):
        if sigma > MAX_FOCAL_REL_STD * abs(value):
            out.append(f"poorly conditioned fit: {name} = {value:.0f} +/- {sigma:.0f} px: tilt the board more "
                       "(30-45 deg) in the views, in different directions")
            break
    shaky = [f"{n} = {v:.3g} +/- {s:.2g}" for n, v, s in zip(_DIST_NAMES, dist, std[4:]) if s > MAX_DIST_STD]
    if shaky:
        out.append("poorly conditioned fit: distortion " + ", ".join(shaky) + " is not determined by these views: "
                   "do not use these values; add views with the board near the image corners and edges")
    return out
