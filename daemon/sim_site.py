"""A simulated site for the collect -> review -> fine-tune -> reload walkthrough (docs/site-data.md).

Why: the loop should be tried before a plant has a camera. ``render`` writes a belt video from
the bundled photos plus its ground truth; ``label`` plays the person at the review step: it
writes the review folder's corrections.txt from that ground truth, matching every collected
crop to the simulated item by frame and position.

  python -m daemon.sim_site render --items 24 --out belt.avi      # + belt.truth.json
  python -m daemon.sim_site label --truth belt.truth.json --review site/
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from daemon.conveyor_sim import SimItem, SimVideo, load_samples, render_conveyor

TOLERANCE_PX = 40.0


def truth_path(video: Path) -> Path:
    return video.with_suffix(".truth.json")


def save_truth(video: SimVideo) -> Path:
    data = {"fps": video.fps, "n_frames": video.n_frames, "width": video.width, "height": video.height,
            "speed_px_s": video.speed_px_s, "items": [asdict(it) for it in video.items]}
    path = truth_path(video.path)
    path.write_text(json.dumps(data, indent=1))
    return path


def load_truth(path: Path, video: Path | None = None) -> SimVideo:
    try:
        d = json.loads(path.read_text())
        items = [SimItem(**it) for it in d["items"]]
        return SimVideo(video or path, d["fps"], d["n_frames"], d["width"], d["height"], d["speed_px_s"], items)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a simulator ground-truth file: {e}") from None


def corrections_from_truth(truth: SimVideo, review: Path, px_per_mm: float = 1.0) -> tuple[list[str], int]:
    """'N label' for every crop under review whose simulated item is known; (lines, crops not matched)."""
    state = review / "labels.json"
    if not state.is_file():
        raise ValueError(f"{review} is not a review folder: run `wastesort-train review COLLECTED --out {review}` first")
    lines, unmatched = [], 0
    for e in json.loads(state.read_text())["images"]:
        meta = json.loads(Path(e["source"]).with_name(Path(e["source"]).name.rsplit("-", 1)[0] + ".json").read_text())
        item = truth.item_at(int(meta["frame"]), float(meta["position_mm"]) * px_per_mm, TOLERANCE_PX)
        if item is None:
            unmatched += 1
            continue
        lines.append(f"{e['number']} {item.label}")
    return lines, unmatched


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daemon.sim_site", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="a belt video of the bundled photos and its ground truth")
    r.add_argument("--items", type=int, default=24)
    r.add_argument("--out", type=Path, required=True, help="video file (.avi); the truth goes next to it")
    r.add_argument("--speed", type=float, default=400.0, help="belt speed in px/s (= mm/s at 1 px per mm)")
    r.add_argument("--seed", type=int, default=0)
    lb = sub.add_parser("label", help="write corrections.txt of a review folder from the ground truth")
    lb.add_argument("--truth", type=Path, required=True)
    lb.add_argument("--review", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        result: dict[str, Any]
        if args.command == "render":
            if args.items < 1:
                raise ValueError("--items must be at least 1")
            video = render_conveyor(args.out, load_samples(), args.items, speed_px_s=args.speed, spacing_px=160,
                                    seed=args.seed)
            result = {"video": str(video.path), "truth": str(save_truth(video)), "frames": video.n_frames,
                      "seconds": round(video.n_frames / video.fps, 1)}
        else:
            lines, unmatched = corrections_from_truth(load_truth(args.truth), args.review)
            path = args.review / "corrections.txt"
            path.write_text("# from the simulator's ground truth\n" + "\n".join(lines) + "\n")
            result = {"corrections": str(path), "labelled": len(lines), "unmatched": unmatched}
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
