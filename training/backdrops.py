"""Synthetic surfaces to put cut-out items on: belts, noise, gradients, plain dark or bright boards.

Each is drawn from a numpy Generator, so a view is reproducible from its seed alone.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("belt", "noise", "gradient", "plain")


def _belt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Dark rubber or fabric belt: grey with a tint, fine grain and faint stripes along the belt."""
    base = rng.uniform(25, 120)
    tint = rng.normal(0, 6, 3)
    grain = rng.normal(0, rng.uniform(2, 10), (h, w, 1))
    img = np.full((h, w, 3), base, np.float32) + tint + grain
    if rng.random() < 0.6:
        period = rng.uniform(3, 14)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(np.arange(w if rng.random() < 0.5 else h) * 2 * np.pi / period + phase) * rng.uniform(2, 10)
        img += stripes[None, :, None] if stripes.shape[0] == w else stripes[:, None, None]
    if rng.random() < 0.4:  # dirt and stains
        stains = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), rng.uniform(4, 12))
        img += (stains / (stains.std() + 1e-6) * rng.uniform(3, 12))[..., None]
    return img


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    colour = rng.uniform(0, 255, 3)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), rng.uniform(0.5, 6))
    return colour + noise / (noise.std() + 1e-6) * rng.uniform(10, 50)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    return a + (b - a) * t[..., None]


def _plain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    level = rng.choice([rng.uniform(5, 70), rng.uniform(170, 250)])  # darker or brighter than the board
    return np.full((h, w, 3), level, np.float32) + rng.normal(0, 8, 3) + rng.normal(0, 2, (h, w, 1))


_MAKERS = {"belt": _belt, "noise": _noise, "gradient": _gradient, "plain": _plain}


def backdrop(rng: np.random.Generator, h: int, w: int, kind: str | None = None) -> np.ndarray:
    """A (h, w, 3) uint8 surface; `kind` None draws one (belts half the time)."""
    if kind is None:
        kind = "belt" if rng.random() < 0.5 else str(rng.choice(KINDS[1:]))
    if kind not in _MAKERS:
        raise ValueError(f"unknown backdrop kind {kind!r} (known: {', '.join(KINDS)})")
    return np.clip(_MAKERS[kind](rng, h, w), 0, 255).astype(np.uint8)


__all__ = ["KINDS", "backdrop"]
