"""Renders a simulated conveyor belt video with known items, for the demo, tests and benchmarks.

Items (photos) ride a textured belt left to right at a constant speed; the
ground truth says where every item is at any time, so a run can be scored for
accuracy and gate timing.

``BeltStyle`` makes the belt harder, like a real one: a coarse blotchy texture,
lighting that drifts slowly, and items partly coloured like the belt. Those
"split" items are shaped like a sideways H (two bars joined by a narrow bridge;
the rest is belt-coloured), so the detector sees them as two blobs while they
enter and again while they leave - the case that once produced extra items.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SAMPLES_DIR = Path(__file__).with_name("samples")
BELT_GRAY = 70


@dataclass(frozen=True)
class BeltStyle:
    """How hard the rendered belt is; the defaults give the plain belt of the demo."""

    texture: int = 0  # amplitude (grey levels) of a static coarse texture on top of the fine grain
    drift: float = 0.0  # lighting gain varies by +-drift over the run (0.1 = +-10 %)
    drift_period_s: float = 8.0
    split_every: int = 0  # every k-th item (0: none) is a split item (see the module docstring)
    split_gap_px: int = 16  # belt-coloured gap between the two bars of a split item
    split_bridge: float = 0.2  # width of the bridge, as a share of the item width
    close_delta: int = 8  # how much brighter than the belt the belt-like parts of a split item are


@dataclass(frozen=True)
class SimItem:
    """One item of the simulation; its centre is at ``x0 + speed_px_s * t`` (region pixels) at video time t."""

    index: int
    label: str
    source: str
    x0: float  # centre x at t = 0 (negative: not yet on screen)
    y: int  # top edge
    w: int
    h: int
    split: bool = False  # drawn as a split item (BeltStyle.split_every)

    def center_x(self, t: float, speed_px_s: float) -> float:
        return self.x0 + speed_px_s * t

    def time_at(self, x: float, speed_px_s: float) -> float:
        """Video time at which the centre reaches ``x``."""
        return (x - self.x0) / speed_px_s


@dataclass(frozen=True)
class SimVideo:
    path: Path
    fps: float
    n_frames: int
    width: int
    height: int
    speed_px_s: float
    items: list[SimItem]

    def item_at(self, frame: int, x: float, tolerance_px: float) -> SimItem | None:
        """The item whose centre is nearest to ``x`` in ``frame`` (within tolerance)."""
        t = frame / self.fps
        best = min(self.items, key=lambda it: abs(it.center_x(t, self.speed_px_s) - x), default=None)
        if best is None or abs(best.center_x(t, self.speed_px_s) - x) > tolerance_px:
            return None
        return best


def load_samples(folder: Path = SAMPLES_DIR) -> list[tuple[str, Path]]:
    """(label, path) for every image in ``folder/<label>/``, sorted."""
    found = [
        (d.name, p)
        for d in sorted(folder.iterdir())
        if d.is_dir()
        for p in sorted(d.iterdir())
        if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]
    if not found:
        raise FileNotFoundError(f"no sample images in {folder}/<class>/")
    return found


def belt_background(width: int, height: int, seed: int = 0, texture: int = 0) -> np.ndarray:
    """An empty belt: dark grey rubber with a fixed fine grain (plus coarse blotches of +-``texture``) and rails."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-6, 7, size=(height, width), dtype=np.int16)
    if texture > 0:
        coarse = cv2.resize(rng.uniform(-1, 1, (max(2, height // 16), max(2, width // 16))), (width, height),
                            interpolation=cv2.INTER_CUBIC)
        noise += np.round(np.clip(coarse, -1, 1) * texture).astype(np.int16)
    gray = np.clip(BELT_GRAY + noise, 0, 255).astype(np.uint8)
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    img[:6] = (150, 150, 150)
    img[-6:] = (150, 150, 150)
    return img


def split_sprite(sprite: np.ndarray, style: BeltStyle) -> np.ndarray:
    """The photo as a sideways H: top and bottom bars joined by a central bridge, the rest belt-coloured."""
    h, w = sprite.shape[:2]
    bar = max(1, (h - style.split_gap_px) // 2)
    half_bridge = max(1, round(w * style.split_bridge / 2))
    out = np.full_like(sprite, BELT_GRAY + style.close_delta)
    out[:bar] = sprite[:bar]
    out[h - bar :] = sprite[h - bar :]
    out[:, w // 2 - half_bridge : w // 2 + half_bridge] = sprite[:, w // 2 - half_bridge : w // 2 + half_bridge]
    return out


def render_conveyor(
    path: Path,
    samples: list[tuple[str, Path]],
    n_items: int,
    width: int = 640,
    height: int = 240,
    fps: float = 30.0,
    speed_px_s: float = 300.0,
    item_height: int = 112,
    spacing_px: int = 200,
    seed: int = 0,
    lead_in_s: float = 0.3,
    style: BeltStyle = BeltStyle(),
) -> SimVideo:
    """Write an MJPG .avi of ``n_items`` items (cycling through ``samples``) crossing the belt."""
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, Path]]] = {}
    for label, src in samples:
        by_label.setdefault(label, []).append((label, src))
    for group in by_label.values():
        rng.shuffle(group)
    # Round-robin over classes (in a shuffled class order) so that any N items mix the classes.
    labels = sorted(by_label)
    rng.shuffle(labels)
    pool = [by_label[lb][k] for k in range(max(map(len, by_label.values()))) for lb in labels if k < len(by_label[lb])]
    order = [pool[i % len(pool)] for i in range(n_items)]
    sprites: list[np.ndarray] = []
    items: list[SimItem] = []
    for i, (label, src) in enumerate(order):
        img = cv2.imread(str(src), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read sample image {src}")
        scale = item_height / img.shape[0]
        sprite = cv2.resize(img, (max(8, round(img.shape[1] * scale)), item_height), interpolation=cv2.INTER_AREA)
        h, w = sprite.shape[:2]
        y = rng.randint(8, max(8, height - h - 8))
        x0 = -w / 2 - lead_in_s * speed_px_s - i * spacing_px
        split = style.split_every > 0 and i % style.split_every == 0
        sprites.append(split_sprite(sprite, style) if split else sprite)
        items.append(SimItem(i, label, src.name, x0, y, w, h, split))
    last = items[-1]
    duration = last.time_at(width + last.w / 2 + 2, speed_px_s) + 0.3
    n_frames = int(np.ceil(duration * fps))
    background = belt_background(width, height, seed, style.texture)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}")
    frame = np.empty_like(background)
    try:
        for k in range(n_frames):
            np.copyto(frame, background)
            t = k / fps
            for it, sprite in zip(items, sprites):
                left = round(it.center_x(t, speed_px_s) - it.w / 2)
                a, b = max(0, left), min(width, left + it.w)
                if a < b:
                    frame[it.y : it.y + it.h, a:b] = sprite[:, a - left : b - left]
            if style.drift > 0:  # the light on the whole scene, belt and items alike
                gain = 1.0 + style.drift * np.sin(2 * np.pi * t / style.drift_period_s)
                cv2.convertScaleAbs(frame, dst=frame, alpha=gain)
            writer.write(frame)
    finally:
        writer.release()
    return SimVideo(Path(path), fps, n_frames, width, height, speed_px_s, items)
