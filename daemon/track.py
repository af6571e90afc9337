"""Follows items across frames using the known belt motion, so each physical item gets one id.

A track's position is predicted as ``x + belt_speed_px_s * dt`` and matched to
the nearest detection. Each track is handed out for classification exactly
once: on its first view fully inside the region, or - for an item that never
fits - with its largest view as soon as it reaches the downstream edge (its view
only shrinks from there, and waiting for it to vanish would add frames of latency).

A detection that lies mostly inside an existing item's box is a fragment of that
item (the detector split it), not a new item. A track that vanishes before it was
ever fully inside or at the downstream edge is not classified: it is counted in
``lost`` (fragments that merged back, or an item taken off the belt upstream).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from daemon.detect import Detection
from daemon.settings import TrackSettings


@dataclass
class Track:
    id: int
    det: Detection
    t_last: float  # belt-motion time of the last view
    t_capture: float  # capture time of the last view (for scheduling and latency)
    frame_index: int
    first_seen: float
    missed: int = 0
    classified: bool = False
    best_crop: np.ndarray | None = None
    best_area: float = 0.0
    best_t_capture: float = 0.0
    best_det: Detection | None = None
    best_frame: int = 0


@dataclass(frozen=True)
class ReadyItem:
    """An item to classify now: its crop and where it was, in the frame captured at ``t_capture``."""

    track_id: int
    crop: np.ndarray
    det: Detection
    t_capture: float
    frame_index: int
    first_seen: float
    partial: bool = False  # classified from a view that was not fully inside the region


@dataclass
class BeltTracker:
    settings: TrackSettings
    speed_px_s: float
    region_width: int
    edge_margin_px: int = 2
    crop_padding_px: int = 4
    fragment_overlap: float = 0.5  # share of a new detection's box inside an item's box that makes it a fragment
    tracks: list[Track] = field(default_factory=list)
    lost: int = 0  # tracks that vanished undecided (see the module docstring)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _inside(self, d: Detection) -> bool:
        return d.x > self.edge_margin_px and d.x + d.w < self.region_width - self.edge_margin_px

    def _at_exit(self, d: Detection) -> bool:
        """Touches the downstream edge (the belt moves towards +x in the region)."""
        return d.x + d.w >= self.region_width - self.edge_margin_px

    @staticmethod
    def _moved(d: Detection, dx: float) -> Detection:
        return Detection(round(d.x + dx), d.y, d.w, d.h, d.area)

    def _is_fragment(self, d: Detection, boxes: list[Detection]) -> bool:
        for b in boxes:
            iw = min(d.x + d.w, b.x + b.w) - max(d.x, b.x)
            ih = min(d.y + d.h, b.y + b.h) - max(d.y, b.y)
            if iw > 0 and ih > 0 and iw * ih >= self.fragment_overlap * d.w * d.h:
                return True
        return False

    def _crop(self, region: np.ndarray, d: Detection) -> np.ndarray:
        p = self.crop_padding_px
        h, w = region.shape[:2]
        return region[max(0, d.y - p) : min(h, d.y + d.h + p), max(0, d.x - p) : min(w, d.x + d.w + p)]

    def update(
        self,
        detections: list[Detection],
        t: float,
        frame_index: int,
        region: np.ndarray,
        t_capture: float | None = None,
    ) -> list[ReadyItem]:
        """Match ``detections`` (from ``region`` at belt time ``t``) to tracks; return items to classify.

        ``t`` drives the motion model; ``t_capture`` (default: ``t``) is what the ready items carry. They
        differ when a file is processed as fast as possible: the belt time is then the frame's video time.
        """
        t_cap = t if t_capture is None else t_capture
        shifts = [self.speed_px_s * (t - tr.t_last) for tr in self.tracks]  # belt motion since each last view
        predicted = [self._moved(tr.det, dx) for tr, dx in zip(self.tracks, shifts)]
        pairs = []
        for ti, tr in enumerate(self.tracks):
            px = tr.det.cx + shifts[ti]
            for di, d in enumerate(detections):
                dist = float(np.hypot(d.cx - px, d.cy - tr.det.cy))
                if dist <= self.settings.max_match_distance_px:
                    pairs.append((dist, ti, di))
        pairs.sort()
        used_t: set[int] = set()
        used_d: set[int] = set()
        ready: list[ReadyItem] = []
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            tr = self.tracks[ti]
            tr.det, tr.t_last, tr.t_capture, tr.frame_index, tr.missed = detections[di], t, t_cap, frame_index, 0
            self._observe(tr, region, ready)
        item_boxes = predicted + [self.tracks[ti].det for ti in used_t]
        for di, d in enumerate(detections):
            if di not in used_d:
                if self._is_fragment(d, item_boxes):
                    continue
                tr = Track(next(self._ids), d, t, t_cap, frame_index, first_seen=t_cap)
                self.tracks.append(tr)
                self._observe(tr, region, ready)
        survivors = []
        for ti, tr in enumerate(self.tracks):
            if ti not in used_t and tr.t_last != t:
                tr.missed += 1
            gone = tr.missed > self.settings.max_missed_frames
            if gone and not tr.classified:
                self.lost += 1
            if not gone:
                survivors.append(tr)
        self.tracks = survivors
        return ready

    def _observe(self, tr: Track, region: np.ndarray, ready: list[ReadyItem]) -> None:
        if tr.classified:
            return
        d = tr.det
        if self._inside(d):
            tr.classified = True
            tr.best_crop = None
            ready.append(ReadyItem(tr.id, self._crop(region, d), d, tr.t_capture, tr.frame_index, tr.first_seen))
            return
        if d.area > tr.best_area:
            tr.best_area, tr.best_t_capture, tr.best_det, tr.best_frame = d.area, tr.t_capture, d, tr.frame_index
            tr.best_crop = self._crop(region, d).copy()  # kept in case it never fits fully
        if self._at_exit(d) and tr.best_crop is not None and tr.best_det is not None:  # never fitted, now leaving
            tr.classified = True
            ready.append(ReadyItem(tr.id, tr.best_crop, tr.best_det, tr.best_t_capture, tr.best_frame, tr.first_seen, partial=True))
            tr.best_crop = None
