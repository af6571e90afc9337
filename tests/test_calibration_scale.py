"""Scale from rendered chessboards of known size: square-on, perspective-warped, and lens intrinsics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.cli import main
from calibration.scale import calibrate_intrinsics, measure_scale
from daemon.settings import load_settings
from test_calibration_config import make_config

PATTERN = (8, 6)  # inner corners
SQUARE_MM = 20.0


def board_texture(px_per_mm: float, margin_mm: float = 20.0) -> np.ndarray:
    """A white sheet with a (cols+1) x (rows+1) chessboard; the board's outer corner sits at (margin, margin) mm."""
    cols, rows = PATTERN[0] + 1, PATTERN[1] + 1
    w_mm, h_mm = cols * SQUARE_MM + 2 * margin_mm, rows * SQUARE_MM + 2 * margin_mm
    img = np.full((round(h_mm * px_per_mm), round(w_mm * px_per_mm)), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:
                x0, y0 = (margin_mm + c * SQUARE_MM) * px_per_mm, (margin_mm + r * SQUARE_MM) * px_per_mm
                img[round(y0) : round(y0 + SQUARE_MM * px_per_mm), round(x0) : round(x0 + SQUARE_MM * px_per_mm)] = 0
    return img


def test_square_on_board_scale_within_1_percent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    px_per_mm = 1.63
    board = board_texture(px_per_mm)
    frame = np.full((480, 640), 90, np.uint8)  # grey belt
    frame[110 : 110 + board.shape[0], 150 : 150 + board.shape[1]] = board
    image = tmp_path / "board.png"
    cv2.imwrite(str(image), cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    cfg = make_config(tmp_path, {"belt.region": (0, 100, 640, 300)})
    assert main(["scale", "--config", str(cfg), "--image", str(image), "--pattern", "8x6", "--square-mm", "20"]) == 0
    measured = load_settings(cfg).belt.px_per_mm
    print(f"square-on scale truth {px_per_mm} measured {measured:.5f} px/mm, "
          f"error {abs(measured / px_per_mm - 1) * 100:.3f}%", file=sys.__stderr__)
    assert abs(measured / px_per_mm - 1) < 0.01
    out = capsys.readouterr().out
    assert "belt.px_per_mm: 1.0 ->" in out and "homography fit RMS" in out


def test_perspective_board_scale_within_1_percent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The board seen by a tilted camera: the homography gives the local scale at the board centre."""
    tex_scale = 4.0  # texture px per mm
    board = board_texture(tex_scale)
    th, tw = board.shape
    # Plane -> image: the far (left) edge of the sheet looks shorter, as from a camera looking along the belt.
    src = np.float32([[0, 0], [tw, 0], [tw, th], [0, th]])
    dst = np.float32([[250, 170], [780, 100], [800, 640], [240, 560]])
    h_tex_to_img = cv2.getPerspectiveTransform(src, dst)
    frame = cv2.warpPerspective(board, h_tex_to_img, (1024, 720), flags=cv2.INTER_AREA, borderValue=90)
    image = tmp_path / "tilted.png"
    cv2.imwrite(str(image), frame)

    # Truth from the known mapping: board centre (mm) -> image, then one image pixel along x back to mm.
    h_mm_to_img = h_tex_to_img @ np.diag([tex_scale, tex_scale, 1.0])
    centre_mm = np.array([[[20 + (PATTERN[0] + 1) * SQUARE_MM / 2, 20 + (PATTERN[1] + 1) * SQUARE_MM / 2]]])
    c = cv2.perspectiveTransform(centre_mm, h_mm_to_img).reshape(2)
    ends = cv2.perspectiveTransform(np.array([[c - [0.5, 0]], [c + [0.5, 0]]]), np.linalg.inv(h_mm_to_img))
    truth = 1.0 / float(np.linalg.norm(ends[1] - ends[0]))

    region = (100, 200, 800, 300)
    result = measure_scale(frame, PATTERN, SQUARE_MM, region=region, rotate=0)
    error = abs(result.px_per_mm / truth - 1)
    print(f"perspective scale truth {truth:.5f} measured {result.px_per_mm:.5f} px/mm, error {error * 100:.3f}%",
          file=sys.__stderr__)
    assert error < 0.01
    assert result.variation_pct > 2.0 and any("looks at an angle" in w for w in result.warnings)
    assert result.reprojection_rms_px < 0.5

    cfg = make_config(tmp_path, {"belt.region": region})
    assert main(["scale", "--config", str(cfg), "--image", str(image), "--pattern", "8x6", "--square-mm", "20"]) == 0
    assert abs(load_settings(cfg).belt.px_per_mm / truth - 1) < 0.01
    assert "looks at an angle" in capsys.readouterr().out


def _view(k: np.ndarray, rvec: tuple[float, float, float], tvec: tuple[float, float, float]) -> np.ndarray:
    """Render the board as a pinhole camera with matrix k would see it at pose (rvec, tvec), in mm."""
    tex_scale = 3.0
    board = board_texture(tex_scale)
    r, _ = cv2.Rodrigues(np.array(rvec, dtype=np.float64))
    # Board plane (mm, z = 0) -> image: k [r1 r2 t]; texture px -> board mm: divide by tex_scale, centre it.
    h_mm = k @ np.column_stack([r[:, 0], r[:, 1], np.array(tvec)])
    w_mm, h_mm_size = board.shape[1] / tex_scale, board.shape[0] / tex_scale
    tex_to_mm = np.array([[1 / tex_scale, 0, -w_mm / 2], [0, 1 / tex_scale, -h_mm_size / 2], [0, 0, 1]])
    img = cv2.warpPerspective(board, h_mm @ tex_to_mm, (640, 480), flags=cv2.INTER_LINEAR, borderValue=110)
    return cv2.cvtColor(cv2.GaussianBlur(img, (3, 3), 0), cv2.COLOR_GRAY2BGR)


def test_lens_intrinsics_from_views(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = np.array([[620.0, 0, 320], [0, 620.0, 240], [0, 0, 1]])
    poses = [((0.0, 0.0, 0.0), (0, 0, 420)), ((0.35, 0.0, 0.0), (10, -5, 430)), ((-0.3, 0.1, 0.0), (-10, 5, 440)),
             ((0.0, 0.4, 0.1), (5, 0, 450)), ((0.1, -0.35, -0.1), (0, 10, 430)), ((0.25, 0.25, 0.0), (0, 0, 470))]
    views = [_view(k, r, t) for r, t in poses]
    folder = tmp_path / "views"
    folder.mkdir()
    for i, v in enumerate(views):
        cv2.imwrite(str(folder / f"view{i}.png"), v)
    result = calibrate_intrinsics(views, PATTERN, SQUARE_MM)
    assert result.views_used == len(poses)
    assert result.rms_px < 0.5
    fx, fy = result.camera_matrix[0][0], result.camera_matrix[1][1]
    assert abs(fx / 620 - 1) < 0.03 and abs(fy / 620 - 1) < 0.03

    cfg = make_config(tmp_path)
    out_json = tmp_path / "intrinsics.json"
    argv = ["scale", "--config", str(cfg), "--image", str(folder / "view0.png"), "--pattern", "8x6",
            "--square-mm", "20", "--views", str(folder), "--intrinsics-out", str(out_json)]
    assert main(argv) == 0
    assert "RMS reprojection error" in capsys.readouterr().out
    saved = json.loads(out_json.read_text())
    assert saved["views_used"] == len(poses) and len(saved["camera_matrix"]) == 3


def test_no_board_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "empty.png"
    cv2.imwrite(str(image), np.full((240, 320, 3), 100, np.uint8))
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    assert main(["scale", "--config", str(cfg), "--image", str(image), "--pattern", "8x6", "--square-mm", "20"]) == 2
    assert "no 8x6 chessboard" in capsys.readouterr().err
    assert cfg.read_text() == before


def test_scale_that_puts_gates_inside_region_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong --square-mm (cm typed as mm) gives a scale under which the gates lie inside the region."""
    board = board_texture(1.6)
    frame = np.full((480, 640), 90, np.uint8)
    frame[110 : 110 + board.shape[0], 150 : 150 + board.shape[1]] = board
    image = tmp_path / "board.png"
    cv2.imwrite(str(image), frame)
    cfg = make_config(tmp_path, {"belt.region": (0, 100, 640, 300)})
    assert main(["scale", "--config", str(cfg), "--image", str(image), "--pattern", "8x6", "--square-mm", "2000"]) == 2
    assert "daemon's validation" in capsys.readouterr().err


def test_camera_tilted_across_the_belt_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scale constant along the centre line but 2.04 -> 1.96 px/mm from the top to the bottom of the region."""
    tex_scale = 4.0
    board = board_texture(tex_scale)
    c = 1.5e-4  # perspective along image y only: x_px = a x / (1 + c y), so the along-belt scale depends on y
    h_mm = np.array([[2.06, 0.0, 150.0], [0.0, 2.06, 60.0], [0.0, c, 1.0]])
    h_tex = h_mm @ np.diag([1 / tex_scale, 1 / tex_scale, 1.0])
    frame = cv2.warpPerspective(board, h_tex, (800, 600), flags=cv2.INTER_AREA, borderValue=90)
    region = (0, 40, 800, 520)
    result = measure_scale(frame, PATTERN, SQUARE_MM, region=region, rotate=0)
    along = result.scale_along_region
    assert (max(along) - min(along)) / np.mean(along) < 0.005  # the centre line alone sees (almost) nothing
    # Truth from the known mapping at the region's top and bottom rows.
    inv = np.linalg.inv(h_mm)

    def truth_at(y: float) -> float:
        ends = cv2.perspectiveTransform(np.array([[[400 - 0.5, y]], [[400 + 0.5, y]]]), inv)
        return 1.0 / float(np.linalg.norm(ends[1] - ends[0]))

    top, bottom = truth_at(40), truth_at(560)
    expected = (top - bottom) / np.mean([top, bottom]) * 100
    assert expected > 2.0 and abs(result.variation_pct - expected) < 0.6
    assert any("looks at an angle" in w for w in result.warnings)
    cfg = make_config(tmp_path, {"belt.region": region, "gates.1.distance_mm": 1000.0})
    image = tmp_path / "tilted.png"
    cv2.imwrite(str(image), frame)
    assert main(["scale", "--config", str(cfg), "--image", str(image), "--pattern", "8x6", "--square-mm", "20",
                 "--dry-run"]) == 0
    assert "looks at an angle" in capsys.readouterr().out


def test_poorly_conditioned_intrinsics_are_flagged() -> None:
    """Nearly flat views leave the focal length (and k3) undetermined: a low RMS must not hide that."""
    k = np.array([[620.0, 0, 320], [0, 620.0, 240], [0, 0, 1]])
    flat = [((0.0, 0.0, 0.0), (0, 0, 420)), ((0.0, 0.0, 0.05), (20, -10, 430)),
            ((0.02, 0.0, -0.05), (-15, 10, 440)), ((0.0, 0.02, 0.0), (0, 0, 460))]
    result = calibrate_intrinsics([_view(k, r, t) for r, t in flat], PATTERN, SQUARE_MM)
    assert result.rms_px < 0.5  # looks fine by RMS alone
    assert any("poorly conditioned fit: fx" in w for w in result.warnings)
    assert any("k3" in w and "do not use these values" in w for w in result.warnings)


def test_intrinsics_file_is_not_written_when_the_config_is_refused(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    k = np.array([[620.0, 0, 320], [0, 620.0, 240], [0, 0, 1]])
    poses = [((0.0, 0.0, 0.0), (0, 0, 420)), ((0.35, 0.0, 0.0), (10, -5, 430)), ((-0.3, 0.1, 0.0), (-10, 5, 440))]
    folder = tmp_path / "views"
    folder.mkdir()
    for i, (r, t) in enumerate(poses):
        cv2.imwrite(str(folder / f"v{i}.png"), _view(k, r, t))
    # The board reads ~1.48 px/mm: the 640 px region becomes ~433 mm, and gate 1 at 300 mm would be inside it.
    cfg = make_config(tmp_path, {"belt.px_per_mm": 3.0, "gates.1.distance_mm": 300.0})
    out_json = tmp_path / "intrinsics.json"
    argv = ["scale", "--config", str(cfg), "--image", str(folder / "v0.png"), "--pattern", "8x6", "--square-mm", "20",
            "--views", str(folder), "--intrinsics-out", str(out_json)]
    assert main(argv) == 2
    assert "gates.1.distance_mm" in capsys.readouterr().err
    assert not out_json.exists()
