"""Detection against the empty belt and tracking with the known belt motion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.conveyor_sim import BeltStyle, SimVideo, belt_background, load_samples, render_conveyor
from daemon.detect import BeltDetector, Detection
from daemon.settings import DetectSettings, TrackSettings
from daemon.track import BeltTracker, ReadyItem

W, H, FPS = 320, 160, 30.0


def frame_with(boxes: list[tuple[float, int, int, int]]) -> np.ndarray:
    """Belt frame with bright boxes given as (left x, top y, w, h); parts outside the frame are cut."""
    img = belt_background(W, H, seed=1).copy()
    for x, y, w, h in boxes:
        a, b = max(0, round(x)), min(W, round(x) + w)
        if a < b:
            img[y : y + h, a:b] = (220, 210, 200)
    return img


def run(frames: list[np.ndarray], speed_px_s: float, track: TrackSettings | None = None):
    det = BeltDetector(DetectSettings(min_area_px=200))
    tr = BeltTracker(track or TrackSettings(), speed_px_s=speed_px_s, region_width=W)
    ready_per_frame, ids_per_frame = [], []
    for k, f in enumerate(frames):
        ds = det.detect(f)
        ready = tr.update(ds, t=k / FPS, frame_index=k, region=f)
        ready_per_frame.append(ready)
        ids_per_frame.append(sorted(t.id for t in tr.tracks))
    return ready_per_frame, ids_per_frame


def test_detector_finds_one_box_and_ignores_the_empty_belt() -> None:
    det = BeltDetector(DetectSettings(min_area_px=200))
    assert det.detect(frame_with([])) == []  # first frame = empty belt
    found = det.detect(frame_with([(100, 40, 50, 60)]))
    assert len(found) == 1
    d = found[0]
    assert abs(d.x - 100) <= 2 and abs(d.w - 50) <= 4 and abs(d.h - 60) <= 4
    assert det.detect(frame_with([(100, 40, 6, 6)])) == []  # below min area: noise


def test_one_moving_item_gets_one_id_and_is_classified_once_when_fully_inside() -> None:
    speed = 240.0  # px/s = 8 px per frame
    frames = [frame_with([])] + [frame_with([(-60 + speed * k / FPS, 50, 60, 60)]) for k in range(1, 50)]
    ready, ids = run(frames, speed)
    all_ready = [r for rs in ready for r in rs]
    assert len(all_ready) == 1
    item = all_ready[0]
    assert not item.partial
    assert item.det.x > 2  # fully inside when classified
    assert item.crop.shape[0] >= 60 and item.crop.shape[1] >= 60
    assert item.crop.shape[:2] == (item.det.h, item.det.w)  # no belt around it: the model never saw belt in training
    assert {i for frame_ids in ids for i in frame_ids} == {item.track_id}


def test_two_items_side_by_side_get_two_ids() -> None:
    speed = 240.0
    frames = [frame_with([])] + [
        frame_with([(-60 + speed * k / FPS, 10, 50, 50), (-140 + speed * k / FPS, 95, 50, 50)]) for k in range(1, 60)
    ]
    ready, _ = run(frames, speed)
    all_ready = [r for rs in ready for r in rs]
    assert len(all_ready) == 2
    assert len({r.track_id for r in all_ready}) == 2


def test_belt_motion_prediction_keeps_ids_on_a_fast_belt() -> None:
    # 45 px per frame: more than the 40 px match radius, so only the motion model can link frames.
    speed = 45 * FPS
    frames = [frame_with([])] + [frame_with([(-60 + 45 * k, 50, 60, 60)]) for k in range(1, 9)]
    _, ids = run(frames, speed)
    seen = {i for frame_ids in ids for i in frame_ids}
    assert len(seen) == 1
    _, ids_without_motion = run(frames, speed_px_s=1e-6)
    assert len({i for frame_ids in ids_without_motion for i in frame_ids}) > 1


def test_item_longer_than_the_region_is_classified_once_as_it_reaches_the_exit() -> None:
    speed = 240.0
    frames = [frame_with([])] + [frame_with([(-400 + speed * k / FPS, 40, 400, 60)]) for k in range(1, 80)]
    frames += [frame_with([])] * 8
    ready, _ = run(frames, speed, TrackSettings(max_missed_frames=3))
    all_ready = [r for rs in ready for r in rs]
    assert len(all_ready) == 1
    item = all_ready[0]
    assert item.partial
    assert item.crop.shape[1] >= W - 10  # the view spanning the whole region
    # decided in the frame where its front reached the downstream edge, not frames later when it vanished
    decided_in = next(k for k, rs in enumerate(ready) if rs)
    first_at_exit = next(k for k in range(1, 80) if -400 + speed * k / FPS + 400 >= W - 2)
    assert decided_in == item.frame_index == first_at_exit


def test_a_fragment_inside_an_items_box_is_not_a_second_item() -> None:
    speed = 240.0
    frames = [frame_with([])]
    for k in range(1, 60):
        x = -60 + speed * k / FPS
        # frame 30: the detector sees the item as two blobs (top part and a small piece under it)
        frames.append(frame_with([(x, 20, 60, 50), (x + 15, 90, 30, 20)]) if k == 30 else frame_with([(x, 20, 60, 90)]))
    ready, _ = run(frames, speed)
    assert len([r for rs in ready for r in rs]) == 1


def test_a_track_that_vanishes_at_the_entry_is_lost_not_classified() -> None:
    speed = 240.0
    frames = [frame_with([])]
    frames += [frame_with([(-40 + speed * k / FPS, 50, 60, 60)]) for k in range(1, 4)]  # peeks in, then gone
    frames += [frame_with([])] * 10
    det = BeltDetector(DetectSettings(min_area_px=200))
    tr = BeltTracker(TrackSettings(max_missed_frames=3), speed_px_s=speed, region_width=W)
    ready = [r for k, f in enumerate(frames) for r in tr.update(det.detect(f), t=k / FPS, frame_index=k, region=f)]
    assert ready == []
    assert tr.lost == 1 and tr.tracks == []


def test_a_missed_detection_does_not_create_a_new_item() -> None:
    speed = 240.0
    frames = [frame_with([])]
    for k in range(1, 40):
        frames.append(frame_with([]) if k in (10, 11) else frame_with([(-60 + speed * k / FPS, 50, 60, 60)]))
    ready, ids = run(frames, speed)
    assert len([r for rs in ready for r in rs]) == 1
    assert len({i for frame_ids in ids for i in frame_ids}) == 1


def test_detection_centre_properties() -> None:
    d = Detection(10, 20, 30, 40, 1200.0)
    assert (d.cx, d.cy) == (25.0, 40.0)


def replay(video: SimVideo) -> tuple[list[tuple[int, ReadyItem]], BeltTracker, int]:
    """Decode ``video`` with OpenCV and run detector + tracker on it, as the worker does (belt time = video time).

    Returns (frame, ready item) pairs, the tracker and the most raw blobs (no merging) seen at once on a split item.
    """
    det = BeltDetector(DetectSettings())
    raw = BeltDetector(DetectSettings(merge_gap_px=0))
    tr = BeltTracker(TrackSettings(), speed_px_s=video.speed_px_s, region_width=video.width)
    cap = cv2.VideoCapture(str(video.path))
    ready: list[tuple[int, ReadyItem]] = []
    most_blobs = 0
    k = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        found = det.detect(frame)
        blobs = raw.detect(frame)
        t = k / video.fps
        for it in (i for i in video.items if i.split):
            left = it.center_x(t, video.speed_px_s) - it.w / 2
            on_it = [d for d in blobs if left - 4 <= d.cx <= left + it.w + 4 and it.y - 4 <= d.cy <= it.y + it.h + 4]
            most_blobs = max(most_blobs, len(on_it))
        ready += [(k, r) for r in tr.update(found, t=t, frame_index=k, region=frame)]
        k += 1
    cap.release()
    return ready, tr, most_blobs


@pytest.mark.parametrize("gap_px", [16, 40])  # joined by the detector (< merge_gap_px) / by the tracker's footprints
def test_items_that_split_at_both_edges_on_a_drifting_textured_belt_give_one_decision_each(
    tmp_path: Path, gap_px: int
) -> None:
    # Issue 14, defect 1: slivers of a leaving item started new tracks at the exit edge and were classified.
    style = BeltStyle(texture=12, drift=0.12, drift_period_s=3.0, split_every=1, split_gap_px=gap_px)
    video = render_conveyor(tmp_path / "belt.avi", load_samples(), 10, height=200, item_height=80, spacing_px=200,
                            speed_px_s=300.0, seed=1, style=style)
    ready, tr, most_blobs = replay(video)
    assert most_blobs >= 2  # the render really splits items into blobs (else this test proves nothing)
    matched = [video.item_at(k, r.det.cx, tolerance_px=60) for k, r in ready]
    assert None not in matched
    assert sorted(it.index for it in matched if it is not None) == list(range(10))  # each item exactly once
    assert not any(r.partial for _, r in ready)  # all decided from a full view
    assert tr.lost == 0  # the entry-edge pieces merged into their item instead of vanishing undecided
    assert gap_px < DetectSettings().merge_gap_px or tr.merged > 0  # (and that path really ran)


BELT_DARK = Path(__file__).parent / "data" / "belt_dark" / "metal196.jpg"


def iou(a: Detection, b: Detection) -> float:
    inter = BeltTracker._overlap(a, b)
    return inter / (a.w * a.h + b.w * b.h - inter)


@pytest.mark.parametrize("seed", [0, 1])
def test_an_item_the_detector_sees_in_changing_pieces_gives_one_decision_from_a_whole_crop(tmp_path: Path, seed: int) -> None:
    # Foil whose folds are belt-grey enters piece by piece: a bright piece clear of the entry edge was once
    # decided as the whole item (a 40x67 crop of an 85x112 item), and a later piece became a second item.
    video = render_conveyor(tmp_path / "belt.avi", [("metal", BELT_DARK)], 6, seed=seed)
    ready, _, _ = replay(video)
    matched = [video.item_at(k, r.det.cx, tolerance_px=60) for k, r in ready]
    assert None not in matched
    assert sorted(it.index for it in matched if it is not None) == list(range(6))  # each item exactly once
    overlaps = []
    for (k, r), it in zip(ready, matched):
        assert it is not None
        truth = Detection(round(it.center_x(k / video.fps, video.speed_px_s) - it.w / 2), it.y, it.w, it.h, 0.0)
        overlaps.append(iou(r.det, truth))
        assert r.crop.shape[:2] == (r.det.h, r.det.w)  # the crop is the box the item is placed by
    assert sum(o >= 0.85 for o in overlaps) >= 5, overlaps  # (almost) every crop holds the whole item


def run_views(frames: list[np.ndarray], speed: float, **views) -> list[tuple[int, ReadyItem]]:
    det = BeltDetector(DetectSettings(min_area_px=200))
    tr = BeltTracker(TrackSettings(), speed_px_s=speed, region_width=W, **views)
    return [(k, r) for k, f in enumerate(frames) for r in tr.update(det.detect(f), t=k / FPS, frame_index=k, region=f)]


def test_several_full_views_at_different_positions_make_one_decision() -> None:
    speed = 240.0  # 8 px per frame
    frames = [frame_with([])] + [frame_with([(-60 + speed * k / FPS, 50, 60, 60)]) for k in range(1, 60)]
    ready = run_views(frames, speed, views=3, view_spacing_px=20.0)
    assert len(ready) == 1
    k, item = ready[0]
    assert len(item.all_crops) == 3 and not item.partial
    # Views 24 px apart (every third frame at 8 px/frame), the first at the first full view.
    ((first_full, _),) = run_views(frames, speed)
    assert k == item.frame_index == first_full + 6
    assert item.det.x > 2 and item.det.x + item.det.w < W - 2
    assert not np.array_equal(item.all_crops[0], item.all_crops[-1])  # the item moved: different crops


def test_an_item_leaving_before_all_its_views_is_decided_from_those_it_has() -> None:
    speed = 240.0
    frames = [frame_with([])] + [frame_with([(-60 + speed * k / FPS, 50, 60, 60)]) for k in range(1, 60)]
    ready = run_views(frames, speed, views=8, view_spacing_px=60.0, max_wait_s=10.0)
    assert len(ready) == 1
    k, item = ready[0]
    # Fully inside for about 255 px of travel: room for 4-5 views at 60 px steps, decided when it reaches the exit.
    assert len(item.all_crops) in (4, 5) and not item.partial
    assert item.det.x + item.det.w < W - 2  # the last full view, not the one touching the exit edge
    assert -60 + speed * (k + 1) / FPS + 60 >= W - 2  # ... decided as soon as it touches the exit edge


def test_the_decision_deadline_cuts_the_views_short() -> None:
    speed = 240.0
    frames = [frame_with([])] + [frame_with([(-60 + speed * k / FPS, 50, 60, 60)]) for k in range(1, 60)]
    ready = run_views(frames, speed, views=8, view_spacing_px=0.0, max_wait_s=1.5 / FPS)
    assert len(ready) == 1
    assert len(ready[0][1].all_crops) == 3  # views at 0, 1 and 2 frames: the first one at or past the deadline
