"""Follows items across frames using the known belt motion, so each physical item gets one id.

A track's position is predicted as ``x + belt_speed_px_s * dt`` and matched to
the nearest detection. Each track is handed out for classification exactly
once: on its first whole view - fully inside the region after a frame in which
it was already fully inside, no larger than then, and ``entry_clearance_px`` clear
of the entry edge - cropped by its extent (its last few views moved on with the
belt and joined): an item coloured like the belt enters piece by piece, and its
first piece away from the entry edge is not yet the item. Or - for an item that never
fits - with its largest view as soon as it reaches the downstream edge (its view
only shrinks from there, and waiting for it to vanish would add frames of latency).

An item the detector splits into several blobs stays one item. Every track keeps
a footprint: its largest view so far (all its pieces together), moved on with the
belt. A blob lying mostly inside a footprint - or covering most of one - is a piece
of that item, and the track's view in that frame is the union of its pieces. A
decided item keeps its footprint until it has left the region, so the slivers of
an item on its way out never start a new track at the exit edge. Pieces that
entered as separate tracks and then joined are ``merged``, not lost.

A track that vanishes before it was ever fully inside or at the downstream edge is
not classified: it is counted in ``lost`` (an item taken off the belt upstream).

With ``views`` > 1 an item is decided from several crops, all taken while it lies
fully inside the region, at least ``view_spacing_px`` of belt travel apart. It is
handed out once it has them all, once ``max_wait_s`` passed since its first full
view (the gate does not wait), or as soon as it stops being fully inside or
vanishes - with the views it has.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from daemon.detect import Detection
from daemon.settings import TrackSettings


EXTENT_FRAMES = 4  # views joined into an item's extent: enough for a flickering item, too few for speed errors to add up


@dataclass(frozen=True)
class View:
    """One crop of an item lying fully inside the region, and where it was when."""

    crop: np.ndarray
    det: Detection
    t_capture: float
    frame_index: int
    t_belt: float


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
    footprint: Detection | None = None  # the largest view (union of pieces), at belt time footprint_t
    footprint_t: float = 0.0
    views: list[View] = field(default_factory=list)  # full views not yet handed out
    recent: deque[tuple[Detection, float]] = field(default_factory=lambda: deque(maxlen=EXTENT_FRAMES))  # (view, belt time)
    extent: Detection | None = None  # the item's box in this frame: its recent views moved on with the belt, joined
    settled: bool = False  # whole in the frame before too, and the extent stopped growing (TrackSettings.settle_px)


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
    crops: tuple[np.ndarray, ...] = ()  # every view to decide from (empty: just ``crop``)

    @property
    def all_crops(self) -> tuple[np.ndarray, ...]:
        return self.crops or (self.crop,)


@dataclass
class BeltTracker:
    settings: TrackSettings
    speed_px_s: float
    region_width: int
    edge_margin_px: int = 2
    crop_padding_px: int = 0  # see ClassifySettings.crop_padding_px
    fragment_overlap: float = 0.5  # share of a detection's box inside an item's footprint that makes it a piece
    footprint_slack_px: int = 8  # footprints are grown by this much: belt speed and box jitter
    tracks: list[Track] = field(default_factory=list)
    lost: int = 0  # tracks that vanished undecided (see the module docstring)
    merged: int = 0  # tracks that turned out to be pieces of another item
    views: int = 1  # full views per decision (see the module docstring)
    view_spacing_px: float = 0.0  # belt travel between two views; 0: consecutive frames
    max_wait_s: float = 0.25  # from the first full view to the decision, at most
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _inside(self, d: Detection) -> bool:
        return d.x > self.edge_margin_px and d.x + d.w < self.region_width - self.edge_margin_px

    def _at_exit(self, d: Detection) -> bool:
        """Touches the downstream edge (the belt moves towards +x in the region)."""
        return d.x + d.w >= self.region_width - self.edge_margin_px

    @staticmethod
    def _overlap(a: Detection, b: Detection) -> int:
        """Area of the intersection of two boxes."""
        iw = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
        ih = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
        return iw * ih if iw > 0 and ih > 0 else 0

    @staticmethod
    def _union(parts: list[Detection]) -> Detection:
        x0, y0 = min(d.x for d in parts), min(d.y for d in parts)
        x1, y1 = max(d.x + d.w for d in parts), max(d.y + d.h for d in parts)
        return Detection(x0, y0, x1 - x0, y1 - y0, sum(d.area for d in parts))

    def _footprint_at(self, tr: Track, t: float) -> Detection | None:
        """Where the track's whole item is at belt time ``t``, grown by the slack."""
        f = tr.footprint
        if f is None:
            return None
        g = self.footprint_slack_px
        return Detection(round(f.x + self.speed_px_s * (t - tr.footprint_t)) - g, f.y - g, f.w + 2 * g, f.h + 2 * g, f.area)

    def _owner(self, d: Detection, footprints: list[Detection | None]) -> int | None:
        """The track ``d`` is a piece of: most of ``d`` in its footprint, or most of its footprint in ``d``."""
        best, best_share = None, 0.0
        for ti, f in enumerate(footprints):
            if f is None:
                continue
            inter = self._overlap(d, f)
            share = max(inter / (d.w * d.h), inter / (f.w * f.h))
            if share >= self.fragment_overlap and share > best_share:
                best, best_share = ti, share
        return best

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
        pieces = self._assign(detections, t)
        ready: list[ReadyItem] = []
        for ti, dis in pieces.items():
            tr = self.tracks[ti]
            view = self._union([detections[di] for di in dis])
            was_whole = tr.t_last != t and tr.extent is not None and self._inside(tr.det) and self._inside(tr.extent)
            before = tr.extent
            self._see(tr, view, t)
            grow = self.settings.settle_px
            tr.settled = (was_whole and before is not None and tr.extent is not None
                          and tr.extent.w <= before.w + grow and tr.extent.h <= before.h + grow)
            tr.det, tr.t_last, tr.t_capture, tr.frame_index, tr.missed = view, t, t_cap, frame_index, 0
            if tr.footprint is None or view.area >= tr.footprint.area:
                tr.footprint, tr.footprint_t = view, t
            self._observe(tr, region, ready, t)
        assigned = {di for dis in pieces.values() for di in dis}
        for di, d in enumerate(detections):
            if di not in assigned:
                tr = Track(next(self._ids), d, t, t_cap, frame_index, first_seen=t_cap, footprint=d, footprint_t=t)
                self._see(tr, d, t)
                self.tracks.append(tr)
                self._observe(tr, region, ready, t)
        self._retire(set(pieces), t, ready)
        return ready

    def _assign(self, detections: list[Detection], t: float) -> dict[int, list[int]]:
        """Track index -> indices of its pieces: nearest predicted centre first, then footprints."""
        shifts = [self.speed_px_s * (t - tr.t_last) for tr in self.tracks]  # belt motion since each last view
        pairs = []
        for ti, tr in enumerate(self.tracks):
            px = tr.det.cx + shifts[ti]
            for di, d in enumerate(detections):
                dist = float(np.hypot(d.cx - px, d.cy - tr.det.cy))
                if dist <= self.settings.max_match_distance_px:
                    pairs.append((dist, ti, di))
        pairs.sort()
        pieces: dict[int, list[int]] = {}
        used_d: set[int] = set()
        for _, ti, di in pairs:
            if ti in pieces or di in used_d:
                continue
            pieces[ti] = [di]
            used_d.add(di)
        footprints = [self._footprint_at(tr, t) for tr in self.tracks]
        for di, d in enumerate(detections):
            if di in used_d:
                continue
            ti = self._owner(d, footprints)
            if ti is not None:
                pieces.setdefault(ti, []).append(di)
        return pieces

    def _retire(self, seen: set[int], t: float, ready: list[ReadyItem]) -> None:
        """Age tracks not seen in this frame; drop the gone, the merged, and decided items that left.

        An item gone while holding full views is decided from them rather than lost."""
        footprints = [self._footprint_at(tr, t) for tr in self.tracks]
        survivors = []
        for ti, tr in enumerate(self.tracks):
            if ti in seen:
                survivors.append(tr)
                continue
            if tr.t_last != t:
                tr.missed += 1
            here = footprints[ti]
            if not tr.classified and here is not None:
                others = [f if oi in seen else None for oi, f in enumerate(footprints)]
                owner = self._owner(here, others)
                if owner is not None:
                    self.merged += 1  # an entry-edge piece of an item another track now holds whole
                    continue
            gone = tr.missed > self.settings.max_missed_frames
            if gone and tr.views:
                self._hand_out(tr, ready)
            if gone and not tr.classified:
                self.lost += 1
            # A decided item keeps its footprint until it has left: its slivers are pieces, not new items.
            still_passing = tr.classified and here is not None and here.x + self.footprint_slack_px < self.region_width
            if not gone or still_passing:
                survivors.append(tr)
        self.tracks = survivors

    def _see(self, tr: Track, view: Detection, t: float) -> None:
        """Add this frame's view to the track's extent: its recent views, each moved on with the belt to
        ``t`` and joined, so an item the detector sees in different pieces from frame to frame (dark,
        belt-coloured parts) is still cropped whole."""
        tr.recent.append((view, t))
        joined = self._union([Detection(round(v.x + self.speed_px_s * (t - tv)), v.y, v.w, v.h, v.area) for v, tv in tr.recent])
        x0, x1 = max(0, joined.x), min(self.region_width, joined.x + joined.w)  # moved views may run past the exit
        tr.extent = Detection(x0, joined.y, max(1, x1 - x0), joined.h, view.area)

    def _observe(self, tr: Track, region: np.ndarray, ready: list[ReadyItem], t: float) -> None:
        if tr.classified:
            return
        d, ext = tr.det, tr.extent
        inside = self._inside(d)
        if inside and tr.settled and ext is not None and self._inside(ext) and ext.x >= self.settings.entry_clearance_px:
            last = tr.views[-1] if tr.views else None
            if last is None or (t > last.t_belt and self.speed_px_s * (t - last.t_belt) >= self.view_spacing_px):
                d = ext
                crop = self._crop(region, d)
                tr.views.append(View(crop if self.views == 1 else crop.copy(), d, tr.t_capture, tr.frame_index, t))
        if tr.views:
            # all views taken, the deadline passed, or at the exit edge: no more full views will come
            if len(tr.views) >= self.views or t - tr.views[0].t_belt >= self.max_wait_s or not inside:
                self._hand_out(tr, ready)
            return
        if d.area > tr.best_area:
            tr.best_area, tr.best_t_capture, tr.best_det, tr.best_frame = d.area, tr.t_capture, d, tr.frame_index
            tr.best_crop = self._crop(region, d).copy()  # kept in case it never fits fully
        if self._at_exit(d) and tr.best_crop is not None and tr.best_det is not None:  # never fitted, now leaving
            tr.classified = True
            ready.append(ReadyItem(tr.id, tr.best_crop, tr.best_det, tr.best_t_capture, tr.best_frame, tr.first_seen, partial=True))
            tr.best_crop = None

    @staticmethod
    def _hand_out(tr: Track, ready: list[ReadyItem]) -> None:
        """Decide ``tr`` from its full views; position and timing come from the latest one."""
        last = tr.views[-1]
        crops = tuple(v.crop for v in tr.views) if len(tr.views) > 1 else ()
        ready.append(ReadyItem(tr.id, last.crop, last.det, last.t_capture, last.frame_index, tr.first_seen, crops=crops))
        tr.classified, tr.views, tr.best_crop = True, [], None
