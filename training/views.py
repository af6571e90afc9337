"""Augmented views of a photo, each fully determined by one integer seed.

Two families, chosen per view:
- the item cut out (its mask from `training.cutout`) and put on a synthetic surface
  (`training.backdrops`) at a random size, angle and place, sometimes with other items'
  cut-outs at the edges (clutter, as a belt crop shows neighbours);
- the photo as it is (TrashNet's board), randomly cropped, flipped and rotated on a
  belt-grey margin (the daemon's crops carry belt around the item).
Then lighting: brightness, contrast, saturation, hue, blur, sensor noise.

Because a view is a pure function of (photo, mask, seed), the teacher's logits for it can be
computed once and the student can replay the very same view later: consistent distillation at
student cost only (`training.view_cache`). The view is rendered at the larger (teacher) size and
resized down for the student, so both see the same pixels at their own resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from .backdrops import backdrop

BELT_GREY = 60


@dataclass(frozen=True)
class ViewPolicy:
    """Probabilities and ranges of the view family (defaults measured on TrashNet, see docs/method.md)."""

    p_paste: float = 0.7  # item on a synthetic surface (else the photo on its own board)
    p_clutter: float = 0.35  # neighbours' cut-outs at the edges (pasted views only)
    item_scale: tuple[float, float] = (0.55, 0.95)  # item's longer side / canvas' shorter-side-fitted size
    p_margin: float = 0.4  # photo views: shrink onto a belt margin
    colour: float = 1.0  # strength of the lighting changes (0 = none)


def view_policy(paste_share: float) -> ViewPolicy:
    """The default view family with another share of pasted views (a run's `--paste-share`)."""
    if not 0.0 <= paste_share <= 1.0:
        raise ValueError(f"the paste share must lie in [0, 1], got {paste_share}")
    return ViewPolicy(p_paste=paste_share)


def seed_for(base: int, index: int, view: int) -> int:
    """A view's seed from the run seed, the image index and the view number (stable across runs)."""
    return int(np.random.SeedSequence([base, index, view]).generate_state(1)[0])


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask > 127)
    if len(xs) == 0:
        return 0, 0, mask.shape[1], mask.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _rotate_cutout(rgb: np.ndarray, alpha: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate an item and its alpha about the centre, growing the canvas so nothing is cut."""
    h, w = alpha.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos) + 1, int(h * cos + w * sin) + 1
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return (
        cv2.warpAffine(rgb, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)),
        cv2.warpAffine(alpha, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0),
    )


def _prepare_item(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Crop to the mask, flip, rotate: (item RGB, float alpha 0..1) tightly bounded."""
    x0, y0, x1, y1 = _bbox(mask)
    item, alpha = rgb[y0:y1, x0:x1], cv2.GaussianBlur(mask[y0:y1, x0:x1], (3, 3), 0)
    if rng.random() < 0.5:
        item, alpha = item[:, ::-1], alpha[:, ::-1]
    if rng.random() < 0.5:
        item, alpha = item[::-1], alpha[::-1]
    item, alpha = np.ascontiguousarray(item), np.ascontiguousarray(alpha)
    if rng.random() < 0.7:
        item, alpha = _rotate_cutout(item, alpha, float(rng.uniform(0, 360)))
        x0, y0, x1, y1 = _bbox(alpha)
        item, alpha = item[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    return item, alpha.astype(np.float32) / 255.0


def _paste(canvas: np.ndarray, item: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend item onto canvas at (x, y), clipping whatever falls outside."""
    h, w = alpha.shape
    ch, cw = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x), max(0, y), min(cw, x + w), min(ch, y + h)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    a = alpha[cy0 - y : cy1 - y, cx0 - x : cx1 - x, None]
    region = canvas[cy0:cy1, cx0:cx1].astype(np.float32)
    canvas[cy0:cy1, cx0:cx1] = (a * item[cy0 - y : cy1 - y, cx0 - x : cx1 - x] + (1 - a) * region).astype(np.uint8)


def _fit(item: np.ndarray, alpha: np.ndarray, longest: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = alpha.shape
    s = longest / max(h, w)
    size = (max(2, round(w * s)), max(2, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(item, size, interpolation=interp), cv2.resize(alpha, size, interpolation=interp)


def _pasted_view(
    rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator, out_hw: tuple[int, int], policy: ViewPolicy,
    neighbours: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]] | None,
) -> np.ndarray:
    h, w = out_hw
    canvas = backdrop(rng, h, w)
    if neighbours is not None and rng.random() < policy.p_clutter:
        for _ in range(int(rng.integers(1, 3))):  # neighbours peek in at the edges, under the item
            n_rgb, n_mask = neighbours(rng)
            n_item, n_alpha = _prepare_item(n_rgb, n_mask, rng)
            n_item, n_alpha = _fit(n_item, n_alpha, rng.uniform(0.4, 0.8) * max(h, w))
            nh, nw = n_alpha.shape
            side = int(rng.integers(4))
            x = int(rng.integers(-nw + 4, w - 4)) if side < 2 else (-int(nw * rng.uniform(0.6, 0.9)) if side == 2 else w - int(nw * rng.uniform(0.1, 0.4)))
            y = int(rng.integers(-nh + 4, h - 4)) if side >= 2 else (-int(nh * rng.uniform(0.6, 0.9)) if side == 0 else h - int(nh * rng.uniform(0.1, 0.4)))
            _paste(canvas, n_item, n_alpha, x, y)
    item, alpha = _prepare_item(rgb, mask, rng)
    ih, iw = alpha.shape
    fit = min(h / ih, w / iw) * max(ih, iw)  # longest side when the item just fits the canvas
    item, alpha = _fit(item, alpha, fit * rng.uniform(*policy.item_scale))
    ih, iw = alpha.shape
    _paste(canvas, item, alpha, int(rng.integers(0, max(1, w - iw + 1))), int(rng.integers(0, max(1, h - ih + 1))))
    return canvas


def _photo_view(rgb: np.ndarray, rng: np.random.Generator, out_hw: tuple[int, int], policy: ViewPolicy) -> np.ndarray:
    h, w = out_hw
    sh, sw = rgb.shape[:2]
    area = rng.uniform(0.6, 1.0) * sh * sw
    aspect = np.exp(rng.uniform(np.log(0.6), np.log(1.0)))  # width / height, portrait like the photos
    cw, ch = min(sw, round(np.sqrt(area * aspect))), min(sh, round(np.sqrt(area / aspect)))
    x, y = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    view = rgb[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        view = view[:, ::-1]
    if rng.random() < 0.5:
        view = view[::-1]
    view = cv2.resize(np.ascontiguousarray(view), (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < policy.p_margin or rng.random() < 0.3:
        s = rng.uniform(0.75, 1.0) if rng.random() < policy.p_margin else 1.0
        angle = float(rng.uniform(0, 360)) if rng.random() < 0.5 else 0.0
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, s)
        m[0, 2] += rng.uniform(-0.1, 0.1) * w
        m[1, 2] += rng.uniform(-0.1, 0.1) * h
        view = cv2.warpAffine(view, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(BELT_GREY,) * 3)
    return view


def _lighting(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    if strength <= 0:
        return img
    x = img.astype(np.float32)
    x = x * (1 + rng.uniform(-0.3, 0.3) * strength)  # brightness
    mean = x.mean()
    x = (x - mean) * (1 + rng.uniform(-0.3, 0.3) * strength) + mean  # contrast
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * (1 + rng.uniform(-0.3, 0.3) * strength) + grey  # saturation
    x = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * strength:  # hue: small rotation in OpenCV's 0..180 hue circle
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(rng.integers(-5, 6))) % 180).astype(np.uint8)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.random() < 0.2 * strength:
        x = cv2.GaussianBlur(x, (3, 3), rng.uniform(0.1, 1.2))
    if rng.random() < 0.2 * strength:
        x = np.clip(x + rng.normal(0, rng.uniform(2, 8), x.shape), 0, 255).astype(np.uint8)
    return x


def render_view(
    rgb: np.ndarray,
    mask: np.ndarray,
    seed: int,
    out_hw: tuple[int, int],
    policy: ViewPolicy = ViewPolicy(),
    neighbours: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """One augmented RGB uint8 view (out_hw) of `rgb`, a pure function of its arguments."""
    rng = np.random.default_rng(seed)
    if rng.random() < policy.p_paste:
        view = _pasted_view(rgb, mask, rng, out_hw, policy, neighbours)
    else:
        view = _photo_view(rgb, rng, out_hw, policy)
    return _lighting(view, rng, policy.colour)


def neighbour_picker(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """Clutter source: a random other photo and its mask, drawn from the view's own generator."""

    def pick(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i = int(rng.integers(len(images)))
        return images[i], masks[i]

    return pick


__all__ = ["ViewPolicy", "neighbour_picker", "render_view", "seed_for", "view_policy"]
