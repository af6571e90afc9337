"""``wastesort calibrate camera|scale|belt|gates``: measure, print, save a report, update the config.

Called by daemon.cli as ``main(argv)`` with the arguments after ``calibrate``. Exit codes:
0 done, 1 a gate test failed, 2 refused (bad input or a result the daemon would not accept).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2

from calibration import belt, camera, gates, scale
from calibration.commit import Artefact
from calibration.config_writer import Updates, apply_updates, describe, read_config
from calibration.errors import CalibrationError
from calibration.gates_cli import step_gates
from calibration.outcome import StepOutcome
from calibration.preview import Preview
from calibration.quiet import quiet_libraries
from calibration.report import default_report_path, save_report, to_jsonable
from calibration.snapshot import draw_snapshot
from calibration.sources import IMAGE_SUFFIXES, FrameSource

DEFAULT_CONFIG = Path("/etc/wastesort/wastesort.toml")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"daemon config to update (default {DEFAULT_CONFIG})")
    p.add_argument("--dry-run", action="store_true", help="measure and print, but do not change the config")
    p.add_argument("--report", type=Path, default=None, help="JSON report path (default: <config dir>/calibration-reports/)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    p.add_argument("--preview", action="store_true", help="show a preview window when a display is available")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(prog="wastesort calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")

    c = sub.add_parser("camera", parents=[common], help="belt region, empty-belt background, image quality, exposure lock")
    c.add_argument("--source", help="camera index, device, URL, video or image folder (default: camera.source)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--region", help="belt region x,y,width,height in pixels (default: belt.region)")
    g.add_argument("--select", action="store_true", help="drag the region in the preview window (needs a display)")
    c.add_argument("--rotate", type=int, choices=[0, 90, 180, 270], default=None,
                   help="clockwise turn so items travel left to right (default: belt.rotate); saved as belt.rotate")
    c.add_argument("--frames", type=int, default=30, help="frames for the median background (default 30)")
    c.add_argument("--background", type=Path, default=None,
                   help="where to save the empty-belt image (default: <config dir>/empty-belt.png)")
    c.add_argument("--no-background", action="store_true", help="do not save or configure a background image")
    c.add_argument("--lock", action="store_true", help="switch off auto exposure / white balance at the current values")
    c.add_argument("--exposure", type=float, default=None, help="manual exposure (driver units)")
    c.add_argument("--white-balance", type=float, default=None, help="manual white balance temperature (K)")

    sn = sub.add_parser("snapshot", parents=[common],
                        help="save a camera still with a pixel grid, belt.region and the gates drawn (for SSH)")
    sn.add_argument("--source", help="camera index, device, URL, video or image folder (default: camera.source)")
    sn.add_argument("--out", type=Path, default=Path("wastesort-snapshot.png"),
                    help="PNG to write (default: ./wastesort-snapshot.png; copy it off with scp)")
    sn.add_argument("--region", default=None, help="draw this x,y,width,height instead of belt.region")
    sn.add_argument("--grid", type=int, default=50, help="grid spacing in pixels (default 50)")

    s = sub.add_parser("scale", parents=[common], help="px_per_mm from a chessboard on the belt; lens intrinsics")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--image", type=Path, help="photo of the board lying flat on the belt")
    src.add_argument("--source", help="grab the board photo from this camera/video (default: camera.source)")
    s.add_argument("--pattern", required=True, help="inner corners COLSxROWS, e.g. 9x6")
    s.add_argument("--square-mm", type=float, required=True, help="printed square size in mm (measure the print!)")
    s.add_argument("--views", nargs="+", type=Path, default=[],
                   help="board photos (files or folders) for lens intrinsics; at least 3, tilted differently")
    s.add_argument("--intrinsics-out", type=Path, default=None,
                   help="where to save the intrinsics JSON (default: <config dir>/camera-intrinsics.json)")

    b = sub.add_parser("belt", parents=[common], help="belt speed from a video or encoder counts")
    bs = b.add_mutually_exclusive_group()
    bs.add_argument("--video", help="video of the moving belt (textured or carrying a marker)")
    bs.add_argument("--source", help="record from this camera (default: camera.source)")
    bs.add_argument("--encoder", type=Path, help="CSV of time_s,count samples from the belt encoder")
    b.add_argument("--mm-per-count", type=float, default=None, help="belt travel per encoder count (with --encoder)")
    b.add_argument("--seconds", type=float, default=5.0, help="how long to record from a camera (default 5)")
    b.add_argument("--max-frames", type=int, default=None, help="stop after this many video frames")
    b.add_argument("--px-per-mm", type=float, default=None, help="image scale (default: belt.px_per_mm)")
    b.add_argument("--region", default=None, help="x,y,width,height (default: belt.region); saved as belt.region")
    b.add_argument("--full-frame", action="store_true", help="track the whole frame instead of belt.region")
    b.add_argument("--rotate", type=int, choices=[0, 90, 180, 270], default=None,
                   help="clockwise turn so items travel left to right (default: belt.rotate); saved as belt.rotate")
    b.add_argument("--fps", type=float, default=None,
                   help="frame rate the images of an image-folder source were shot at (required for a folder)")

    gt = sub.add_parser("gates", parents=[common], help="test-fire gates over serial; set distances and lead times")
    gt.add_argument("--port", default=None, help="serial port (default: serial.port)")
    gt.add_argument("--baud", type=int, default=None, help="default: serial.baud")
    gt.add_argument("--fire", default=None, help="gates to test-fire: 'all' or a list such as 1,3")
    gt.add_argument("--pulse-ms", type=int, default=None, help="test pulse length (default: each gate's pulse_ms)")
    gt.add_argument("--repeat", type=int, default=1, help="fire each gate this many times")
    gt.add_argument("--interval-s", type=float, default=0.5, help="pause between firings")
    gt.add_argument("--connect-timeout-s", type=float, default=3.0)
    gt.add_argument("--distance", action="append", default=[], metavar="GATE=MM",
                    help="distance from the region's upstream edge to the gate (repeatable)")
    gt.add_argument("--lead-time", action="append", default=[], metavar="GATE=MS", help="actuator lead time (repeatable)")
    gt.add_argument("--pulse", action="append", default=[], metavar="GATE=MS", help="gate pulse length (repeatable)")
    gt.add_argument("--jog", type=int, default=None, metavar="GATE",
                    help="move this servo gate through --angles (SERVO extension of the protocol)")
    gt.add_argument("--angles", "--angle", dest="angles", default=None, metavar="DEG[,DEG...]",
                    help="with --jog: angles to visit, e.g. 45 or 30,90,150")
    gt.add_argument("--bin-names", default=None, metavar="BIN[,BIN...]",
                    help="with --jog: the bin each angle diverts into (a class name or 'reject'); "
                         "saves gates.N.kind = servo and gates.N.bin_angles")
    gt.add_argument("--rest", type=int, default=None, metavar="DEG",
                    help="with --jog: the angle where items pass by (default: gates.N.rest_angle); saved")
    gt.add_argument("--hold-s", type=float, default=1.0, help="with --jog: how long to stay at each angle")
    return p


# --- steps ----------------------------------------------------------------------------------------
def _step_camera(args: argparse.Namespace, preview: Preview) -> StepOutcome:
    cfg = read_config(args.config)
    region = None if args.select else (camera.parse_region(args.region) if args.region else cfg.belt.region)
    bg_path: Path | None = None
    if not args.no_background:
        bg_path = (args.background or args.config.resolve().parent / "empty-belt.png").resolve()
    with FrameSource(args.source or cfg.camera.source, folder_fps=cfg.camera.folder_fps) as src:
        try:
            result, background = camera.calibrate_camera(
                src, region, rotate=cfg.belt.rotate if args.rotate is None else args.rotate, frames=args.frames,
                background_path=bg_path,
                lock=args.lock, exposure=args.exposure, white_balance_k=args.white_balance, preview=preview,
            )
        except CalibrationError as e:
            if args.region or args.select or "region" not in str(e):
                raise
            raise CalibrationError(f"{e} (belt.region from the config: pass --region x,y,width,height; "
                                   "'calibrate snapshot' shows the image with a pixel grid)") from None
    q = result.quality
    lines = [
        f"source {result.source}: {result.frame_width}x{result.frame_height}, {result.frames_used} frames",
        f"belt region {result.region} (rotate {result.rotate})" + ("" if args.region or args.select else
                                                                   " (belt.region from the config)"),
        f"sharpness (Laplacian variance) {q.sharpness:.1f}, brightness {q.brightness:.1f}/255, "
        f"clipped {q.dark_clipped_pct:.2f}% black / {q.bright_clipped_pct:.2f}% white",
        *(f"warning: {w}" for w in result.warnings),
    ]
    for ctl in result.controls:
        state = "applied" if ctl.applied else "IGNORED by the driver"
        lines.append(f"camera control {ctl.name}: requested {ctl.requested:g}, read back {ctl.read_back:g} ({state})")
    if result.controls_note:
        lines.append(f"note: {result.controls_note}")
    if result.controls and any(c.applied for c in result.controls):
        lines.append("note: the daemon re-applies the saved camera.* controls at every camera open (they "
                     "reset on power loss); re-run --lock after a camera change")
    updates: Updates = {"belt.region": list(result.region)}
    if args.rotate is not None:
        updates["belt.rotate"] = args.rotate
    for name, value in result.camera_settings.items():
        updates[f"camera.{name}"] = value
    artefacts: list[Artefact] = []
    if bg_path is not None:
        updates["detect.background_image"] = str(bg_path)
        ok, png = cv2.imencode(bg_path.suffix or ".png", background)
        if not ok:
            raise CalibrationError(f"cannot encode the background as {bg_path.suffix!r}: use a .png path")
        artefacts.append(Artefact(bg_path, png.tobytes()))
        if args.dry_run:
            lines.append(f"empty-belt background: {bg_path} (dry run: not saved)")
    return StepOutcome(result, updates, lines, artefacts)


def _step_snapshot(args: argparse.Namespace, _preview: Preview) -> StepOutcome:
    """One frame with a grid, the region and the gates: choose --region over SSH without a window."""
    cfg = read_config(args.config)
    if args.grid < 10:
        raise CalibrationError(f"--grid must be at least 10 px, got {args.grid}")
    region = camera.parse_region(args.region) if args.region else cfg.belt.region
    with FrameSource(args.source or cfg.camera.source, folder_fps=cfg.camera.folder_fps) as src:
        frames = list(src.frames(limit=10 if src.kind == "camera" else 1))  # a live camera settles first
        if not frames:
            raise CalibrationError(f"{src.source!r} delivered no frame")
    image = frames[-1].image
    offsets = {n: g.distance_mm * cfg.belt.px_per_mm for n, g in cfg.gates.items()}
    shown = draw_snapshot(image, region, cfg.belt.rotate, offsets, grid_px=args.grid)
    out = args.out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(out), shown)
    except OSError as e:
        raise CalibrationError(f"cannot write {out}: {e.strerror}") from None
    if not ok:
        raise CalibrationError(f"cannot write {out}: pick a writable .png path with --out")
    fh, fw = image.shape[:2]
    lines = [f"snapshot {out}: {fw}x{fh} px from {args.source or cfg.camera.source}, grid every {args.grid} px, "
             f"belt.region {region} in green (arrow: direction of travel), gates in red",
             f"copy it off (scp <host>:{out} .), then: wastesort calibrate camera --region x,y,width,height"]
    try:
        camera.check_region(region, image.shape)
    except CalibrationError as e:
        lines.append(f"warning: {e}")
    return StepOutcome({"snapshot": out, "frame_width": fw, "frame_height": fh}, {}, lines, report=False)


def _step_scale(args: argparse.Namespace, preview: Preview) -> StepOutcome:
    cfg = read_config(args.config)
    pattern = scale.parse_pattern(args.pattern)
    if args.image is not None:
        image = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationError(f"cannot read image {args.image}")
    else:
        with FrameSource(args.source or cfg.camera.source) as src:
            # A live camera needs a few frames to settle its exposure.
            frames = list(src.frames(limit=10 if src.kind == "camera" else 1))
            if not frames:
                raise CalibrationError(f"{src.source!r} delivered no frame")
            image = frames[-1].image
    result = scale.measure_scale(image, pattern, args.square_mm, region=cfg.belt.region, rotate=cfg.belt.rotate)
    lines = [
        f"board {pattern[0]}x{pattern[1]} inner corners, squares {args.square_mm:g} mm, "
        f"centre at ({result.board_center_px[0]:.1f}, {result.board_center_px[1]:.1f}) px",
        f"scale along the belt {result.px_per_mm:.4f} px/mm (across {result.px_per_mm_across:.4f}), "
        f"homography fit RMS {result.reprojection_rms_px:.3f} px",
        "scale along belt.region (upstream, centre, downstream): "
        + ", ".join(f"{v:.4f}" for v in result.scale_along_region) + " px/mm",
        f"scale over belt.region ({scale.GRID_POINTS}x{scale.GRID_POINTS} points, along and across the belt): "
        f"{min(g[2] for g in result.scale_grid):.4f}..{max(g[2] for g in result.scale_grid):.4f} px/mm "
        f"({result.variation_pct:.1f}% variation)",
        *(f"warning: {w}" for w in result.warnings),
    ]
    intrinsics = None
    artefacts: list[Artefact] = []
    if args.views:
        views = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in _expand_images(args.views)]
        if any(v is None for v in views):
            raise CalibrationError("some --views images cannot be read")
        intrinsics = scale.calibrate_intrinsics(views, pattern, args.square_mm)
        k = intrinsics.camera_matrix
        lines.append(
            f"lens intrinsics from {intrinsics.views_used} views (rejected {intrinsics.views_rejected}): "
            f"RMS reprojection error {intrinsics.rms_px:.3f} px, fx {k[0][0]:.1f} fy {k[1][1]:.1f} "
            f"cx {k[0][2]:.1f} cy {k[1][2]:.1f}, distortion {[round(d, 4) for d in intrinsics.dist_coeffs]}"
        )
        if intrinsics.rms_px > 1.0:
            lines.append("warning: RMS above 1 px: retake views (sharp, board flat, varied tilts)")
        lines += [f"warning: {w}" for w in intrinsics.warnings]
        out = (args.intrinsics_out or args.config.resolve().parent / "camera-intrinsics.json").resolve()
        artefacts.append(Artefact(out, (json.dumps(to_jsonable(intrinsics), indent=2) + "\n").encode("utf-8")))
        lines.append(f"intrinsics: {out}" + (" (dry run: not saved)" if args.dry_run else
                                              " (the daemon does not undistort yet; kept for reference)"))
    if preview.available:
        shown = image.copy()
        corners = scale.find_corners(image, pattern)
        if corners is not None:
            cv2.drawChessboardCorners(shown, pattern, corners.reshape(-1, 1, 2).astype("float32"), True)
        preview.show(shown, wait_ms=1500)
    return StepOutcome({"scale": result, "intrinsics": intrinsics}, {"belt.px_per_mm": round(result.px_per_mm, 5)},
                       lines, artefacts)


def _expand_images(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(p)
    return files


def _step_belt(args: argparse.Namespace, preview: Preview) -> StepOutcome:
    cfg = read_config(args.config)
    updates: Updates = {}
    extra_lines: list[str] = []
    if args.encoder is not None:
        if args.rotate is not None or args.region is not None or args.full_frame or args.fps is not None:
            raise CalibrationError("--region, --full-frame, --rotate and --fps go with a video or camera, not --encoder")
        if args.mm_per_count is None:
            raise CalibrationError("--encoder needs --mm-per-count")
        t, counts = belt.read_encoder_csv(args.encoder)
        result = belt.speed_from_encoder(t, counts, args.mm_per_count)
    else:
        px_per_mm = args.px_per_mm if args.px_per_mm is not None else cfg.belt.px_per_mm
        region = None if args.full_frame else (camera.parse_region(args.region) if args.region else cfg.belt.region)
        rotate = args.rotate if args.rotate is not None else cfg.belt.rotate
        source = args.video or args.source or cfg.camera.source
        if args.fps is not None and args.fps <= 0:
            raise CalibrationError(f"--fps must be positive, got {args.fps:g}")
        with FrameSource(source, folder_fps=args.fps or cfg.camera.folder_fps) as src:
            if src.kind == "images" and args.fps is None:
                raise CalibrationError(
                    f"{source} is an image folder: its timing is unknown, so pass --fps (the rate the images "
                    f"were shot at); camera.folder_fps ({cfg.camera.folder_fps:g}) is only the daemon's playback pace"
                )
            if src.kind == "camera":
                fps = src.fps or 30.0
                limit = args.max_frames or max(3, int(args.seconds * fps))
            else:
                limit = args.max_frames
            frames = src.frames(limit=limit)
            if preview.available:
                frames = _previewed(frames, preview)
            result = belt.speed_from_frames(frames, region, rotate, px_per_mm)
            timing = (f"timing: image folder at {args.fps:g} fps (--fps)" if src.kind == "images" else
                      "timing: the video's timestamps" if src.kind == "video" else "timing: the clock at each read")
        extra_lines.append(timing)
        if args.max_frames is not None and result.frames is not None and result.frames < args.max_frames:
            extra_lines.append(f"warning: --max-frames {args.max_frames}, but {source} delivered only "
                               f"{result.frames} frames")
        if args.region is not None and not args.full_frame:
            updates["belt.region"] = list(region)  # type: ignore[arg-type]
        if args.rotate is not None:
            updates["belt.rotate"] = args.rotate
        if args.full_frame:
            extra_lines.append("note: measured on the full frame; belt.region is unchanged")
    lines = [
        f"belt speed {result.speed_mm_s:.2f} mm/s ({result.method}, {result.intervals} intervals over "
        f"{result.duration_s:.2f} s): std {result.std_mm_s:.2f}, min {result.min_mm_s:.2f}, max {result.max_mm_s:.2f} mm/s",
    ]
    if result.px_per_frame is not None:
        lines.append(f"mean shift {result.px_per_frame:.3f} px/frame, drift {result.drift_deg:.2f} deg, "
                     f"{result.rejected_intervals} frame pairs rejected")
    lines += [f"warning: {w}" for w in result.warnings] + extra_lines
    updates["belt.speed_mm_s"] = round(result.speed_mm_s, 3)
    return StepOutcome(result, updates, lines)


def _previewed(frames: Any, preview: Preview) -> Any:
    for f in frames:
        preview.show(f.image)
        yield f


STEPS = {"camera": _step_camera, "snapshot": _step_snapshot, "scale": _step_scale, "belt": _step_belt,
         "gates": step_gates}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    with quiet_libraries():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Measure, write (all or nothing), print, save the report; the exit code."""
    preview = Preview(args.preview)
    try:
        out = STEPS[args.step](args, preview)
        write = (apply_updates(args.config, out.updates, dry_run=args.dry_run, artefacts=out.artefacts)
                 if out.updates or out.artefacts else None)
    except CalibrationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        preview.close()
    for line in out.lines:
        print(line)
    if write is not None:
        print(describe(write))
    changes = write.changes if write is not None else []
    if out.report and args.dry_run and args.report is None:
        print("dry run: no report saved (pass --report PATH for one marked dry_run)")
    elif out.report:
        report = save_report(args.report or default_report_path(args.config, args.step), args.step, out.result,
                             changes, dry_run=args.dry_run)
        if report is not None:
            print(f"report: {report}" + (" (marked dry_run)" if args.dry_run else ""))
    if args.json:
        print(json.dumps({"step": args.step, "dry_run": args.dry_run, "result": to_jsonable(out.result),
                          "changes": [str(c) for c in changes]}))
    failed = isinstance(out.result, gates.GateTestResult) and not out.result.all_ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
