"""How a checkpoint's reject rule treats items of NO trained class (food, plants, ceramics, balls),
against known items rendered exactly the same way.

Issue 15 is judged on hidden photos of foreign items (food waste, textiles, wood), which this
project cannot see. The proxy: photographs of such items, already cut out (Debian's
`tuxpaint-stamps-default`, listed in scripts/foreign_items.txt; `apt-get install
tuxpaint-stamps-default`), pasted on TrashNet's own board and on the training backdrops:
- `board`: the foreign item on the board of a validation photo whose own item is painted out,
  against the known validation photos as they are (what the shipped threshold was set on);
- `backdrops`: known and foreign items alike cut out onto a synthetic surface (belt, noise,
  gradient, plain; training.views), so the comparison is between materials, not between a
  pasted and an unpasted picture.

For every checkpoint: the share of foreign items its stored rule (`unknown > 0.5`) and the
daemon's rule (`unknown > 0.5` or confidence below 0.5) send to reject, the known items they
reject, and, per scorer, the share of foreign items above the threshold that keeps 95% of known
items of the same condition (`rejected@95`) with the AUROC. A fine-tuned teacher (`--teacher`)
is scored by maximum softmax, the issue's reference point. Usage:

    .venv/bin/python scripts/unknown_foreign.py model/weights/default.pt [--teacher runs/t2/teacher.pt] [--imagenet]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from model.checkpoint import load_checkpoint
from model.descriptor import FEATURE_SOURCES, feature_source
from model.preprocess import PreprocessConfig
from model.teacher import DEFAULT_TEACHER, TEACHER_INPUTS, teacher_from_payload
from model.unknown import METHODS, prepare_params, raw_scores, softmax, unknown_scores
from training.cutout import MaskStore
from training.data import CachedImageDataset, load_split
from training.loop import make_loader
from training.unknown_fit import auroc, feature_params, logits_and_features, mahalanobis_params, rejected_at_keep, scorer_descriptor
from training.unknown_refit import VIEW_SEED
from training.view_data import Photos, SeededViews, load_photos, to_input, view_seeds
from training.views import ViewPolicy, render_view

ON_BACKDROPS = ViewPolicy(p_paste=1.0, p_clutter=0.0)  # always cut out onto a synthetic surface, no neighbours
BOARD_MAX_ITEM = 0.35  # boards come from photos whose item covers less than this share (painting out more leaves a smear)
MAX_UPSCALE = 1.6  # a small stamp stays small rather than blurred: blur alone makes this model unsure


@dataclass
class Items:
    """Items to render: RGB at the teacher's size with the item's mask, and a group name each."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    groups: list[str]


def read_stamps(folder: Path, listing: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(group, RGB, alpha) of each listed cut-out photo, cropped to its alpha's bounding box."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: apt-get install tuxpaint-stamps-default, or --stamps DIR")
    out = []
    for line in listing.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        group, rel = line.split(maxsplit=1)
        bgra = cv2.imread(str(folder / rel), cv2.IMREAD_UNCHANGED)
        if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
            raise ValueError(f"{folder / rel}: not a readable PNG with an alpha channel")
        ys, xs = np.nonzero(bgra[:, :, 3] > 16)
        bgra = bgra[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        out.append((group, cv2.cvtColor(bgra[:, :, :3], cv2.COLOR_BGR2RGB), bgra[:, :, 3]))
    return out


def empty_board(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo's board with its item painted out (inpainted at a quarter size, then smoothed)."""
    h, w = mask.shape
    grown = cv2.dilate((mask > 64).astype(np.uint8) * 255, np.ones((21, 21), np.uint8))
    small = cv2.inpaint(cv2.resize(rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA), cv2.resize(grown, (w // 4, h // 4), interpolation=cv2.INTER_NEAREST), 5, cv2.INPAINT_TELEA)
    filled = cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 3)
    a = cv2.GaussianBlur(grown, (0, 0), 4).astype(np.float32)[..., None] / 255.0
    return (rgb * (1 - a) + filled * a).astype(np.uint8)


def place(board: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The item on the board, 60-90% of the size that just fits, near the centre: (image, mask)."""
    h, w = board.shape[:2]
    ih, iw = alpha.shape
    scale = min(min(h / ih, w / iw) * rng.uniform(0.6, 0.9), MAX_UPSCALE)
    size = (max(2, round(iw * scale)), max(2, round(ih * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    item, a = cv2.resize(rgb, size, interpolation=interp), cv2.resize(alpha, size, interpolation=interp)
    x = int(np.clip((w - size[0]) / 2 + rng.uniform(-0.1, 0.1) * w, 0, max(0, w - size[0])))
    y = int(np.clip((h - size[1]) / 2 + rng.uniform(-0.1, 0.1) * h, 0, max(0, h - size[1])))
    image, mask = board.copy(), np.zeros((h, w), np.uint8)
    af = a.astype(np.float32)[..., None] / 255.0
    region = image[y : y + size[1], x : x + size[0]]
    region[:] = (region * (1 - af) + item * af).astype(np.uint8)
    mask[y : y + size[1], x : x + size[0]] = a
    return image, mask


class Rendered(Dataset):
    """Each item under one condition, as a network input (label: item index)."""

    def __init__(self, items: Items, condition: str, seed: int, pre: PreprocessConfig) -> None:
        self.items, self.condition, self.seed, self.pre = items, condition, seed, pre

    def __len__(self) -> int:
        return len(self.items.images)

    def image(self, i: int) -> np.ndarray:
        if self.condition == "board":
            return self.items.images[i]
        s = int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
        return render_view(self.items.images[i], self.items.masks[i], s, self.items.images[i].shape[:2], ON_BACKDROPS)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_input(self.image(i), self.pre), i


def foreign_items(stamps: list[tuple[str, np.ndarray, np.ndarray]], boards: list[np.ndarray], placements: int, seed: int) -> Items:
    """Each stamp `placements` times, each time on another board, size and place (mirrored every
    other time)."""
    rng = np.random.default_rng(seed)
    images, masks, groups = [], [], []
    for i, (group, rgb, alpha) in enumerate(stamps):
        for k in range(placements):
            flip = (slice(None), slice(None, None, -1)) if k % 2 else (slice(None), slice(None))
            image, mask = place(boards[int(rng.integers(len(boards)))], np.ascontiguousarray(rgb[flip]), np.ascontiguousarray(alpha[flip]), rng)
            images.append(image)
            masks.append(mask)
            groups.append(group)
    return Items(images, masks, groups)


def rule_row(known_u: np.ndarray, known_conf: np.ndarray, foreign_u: np.ndarray, foreign_conf: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {
        "known_rejected_by_rule": round(float((known_u > 0.5).mean()), 3),
        "known_rejected_by_daemon": round(float(((known_u > 0.5) | (known_conf < 0.5)).mean()), 3),
        "foreign_rejected_by_rule": round(float((foreign_u > 0.5).mean()), 3),
        "foreign_rejected_by_daemon": round(float(((foreign_u > 0.5) | (foreign_conf < 0.5)).mean()), 3),
    }
    for g in sorted(set(groups.tolist())):
        sel = groups == g
        row[f"{g}_rejected_by_daemon"] = round(float(((foreign_u[sel] > 0.5) | (foreign_conf[sel] < 0.5)).mean()), 3)
    return row


def scorer_row(known: np.ndarray, foreign: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {"rejected@95": round(rejected_at_keep(known, foreign), 3), "auroc": round(auroc(known, foreign), 3)}
    for g in sorted(set(groups.tolist())):
        row[f"{g}@95"] = round(rejected_at_keep(known, foreign[groups == g]), 3)
    return row


def leave_one_class_out(train_f: np.ndarray, train_y: np.ndarray, n_photos: int, val_f: np.ndarray, val_y: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per TrashNet class: Mahalanobis fitted on the other classes' training features (photos and
    views), threshold at 95% of their validation photos kept; the held-out class's photos
    (training and validation, as they are) are the unknowns."""
    out: dict[str, Any] = {}
    for c, name in enumerate(names):
        keep = train_y != c
        labels = np.searchsorted(np.array([k for k in range(len(names)) if k != c]), train_y[keep])
        prm = {"method": "mahalanobis", **prepare_params(mahalanobis_params(train_f[keep], labels, len(names) - 1))}
        held = np.concatenate([train_f[:n_photos][train_y[:n_photos] == c], val_f[val_y == c]])
        known = raw_scores("mahalanobis", None, val_f[val_y != c], prm, 1.0)  # type: ignore[arg-type]
        unknown = raw_scores("mahalanobis", None, held, prm, 1.0)  # type: ignore[arg-type]
        out[name] = {"images": len(held), "rejected@95": round(rejected_at_keep(known, unknown), 3), "auroc": round(auroc(known, unknown), 3)}
    out["mean"] = {k: round(float(np.mean([v[k] for v in out.values()])), 3) for k in ("rejected@95", "auroc")}
    return out


@torch.no_grad()
def imagenet_outputs(net: torch.nn.Module, ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1000-way logits, penultimate features, labels) of the pretrained network."""
    ls, fs, ys = [], [], []
    for x, y in loader(ds):
        f = net.forward_head(net.forward_features(x), pre_logits=True)
        ls.append(net.classifier(f).numpy())
        fs.append(f.numpy())
        ys.append(np.asarray(y))
    return np.concatenate(ls), np.concatenate(fs), np.concatenate(ys)


def imagenet_overlap(probs: np.ndarray, class_profiles: np.ndarray) -> np.ndarray:
    """-log of the best overlap between an item's ImageNet distribution and a known class's mean
    one: high when the item looks like ImageNet classes no known item looks like."""
    return -np.log(np.maximum((probs @ class_profiles.T).max(axis=1), 1e-12))


def imagenet_rows(conditions: dict[str, tuple[Dataset, Dataset]], fit_set: Callable[[PreprocessConfig], Dataset], groups: np.ndarray) -> list[dict[str, Any]]:
    from model.efficientnet_lite import build_lite

    net = build_lite(DEFAULT_TEACHER, 1000, pretrained=True).eval()
    train_l, train_f, train_y = imagenet_outputs(net, fit_set(TEACHER_INPUTS[DEFAULT_TEACHER]))
    n_classes = int(train_y.max()) + 1
    fitted = {m: {"method": m, **prepare_params(feature_params(m, train_f, train_y, n_classes))} for m in ("prototype", "mahalanobis", "knn")}  # type: ignore[dict-item]
    train_p = softmax(train_l)
    profiles = np.stack([train_p[train_y == c].mean(axis=0) for c in range(n_classes)])
    rows = []
    for condition, (kds, fds) in conditions.items():
        kl, kf, _ = imagenet_outputs(net, kds)
        fl, ff, _ = imagenet_outputs(net, fds)
        row: dict[str, Any] = {"checkpoint": f"{DEFAULT_TEACHER} ImageNet (not fine-tuned)", "condition": condition}
        for m, prm in fitted.items():
            row[m] = scorer_row(raw_scores(m, kl, kf, prm, 1.0), raw_scores(m, fl, ff, prm, 1.0), groups)
        row["imagenet_overlap"] = scorer_row(imagenet_overlap(softmax(kl), profiles), imagenet_overlap(softmax(fl), profiles), groups)
        rows.append(row)
        print(json.dumps(row))
    return rows


def loader(ds: Dataset) -> DataLoader:
    return make_loader(ds, 64, False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", type=Path)
    p.add_argument("--split", type=Path, default=Path("training/splits/trashnet_seed0.json"))
    p.add_argument("--masks", type=Path, default=Path("runs/masks"))
    p.add_argument("--stamps", type=Path, default=Path("/usr/share/tuxpaint/stamps"))
    p.add_argument("--list", type=Path, default=Path(__file__).with_name("foreign_items.txt"))
    p.add_argument("--views", type=int, default=4, help="placements of each foreign item (another board, size and place each; known items: one each)")
    p.add_argument("--features", choices=FEATURE_SOURCES, default=None, help="rank the distance scorers on these features (default: those the checkpoint's rule reads; the stored rule row is only meaningful on those)")
    p.add_argument("--teacher", type=Path, default=None, help="also score a fine-tuned teacher by maximum softmax")
    p.add_argument("--refit-views", type=int, default=2, help="rank every scorer with features of the training photos plus this many rendered views each (as the shipped rule was fitted)")
    p.add_argument("--imagenet", action="store_true", help="also score with the ImageNet-pretrained Lite0 itself (its 1,280 features and its 1,000-way softmax): what feature distillation could at best hand the student")
    p.add_argument("--loco", action="store_true", help="also hold each TrashNet class out of the Mahalanobis fit and score its photos against the other classes' validation photos; honest only for features no training has seen the class through (the ImageNet descriptor), so the class-token table stays unknown-eval's")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args()
    root = Path(json.loads(args.split.read_text())["root"])
    names, train, val = load_split(args.split, root)
    photos = load_photos(val, TEACHER_INPUTS[DEFAULT_TEACHER].size, MaskStore(args.masks))
    boards = [empty_board(im, m) for im, m in zip(photos.images, photos.masks) if (m > 64).mean() < BOARD_MAX_ITEM]
    known = Items(photos.images, photos.masks, ["known"] * len(photos.images))
    stamps = read_stamps(args.stamps, args.list)
    foreign = foreign_items(stamps, boards, args.views, seed=2)
    groups = np.array(foreign.groups)
    print(json.dumps({"known_items": len(known.images), "foreign_items": len(stamps), "foreign_renderings": len(foreign.images), "groups": {g: [s[0] for s in stamps].count(g) for g in sorted(set(groups.tolist()))}}))
    rows = []

    train_photos: list[Photos] = []  # decoded once, on first use, for every network scored

    def fit_set(pre: PreprocessConfig) -> Dataset:
        """What the scorers are fitted on: the training photos, plus --refit-views rendered views
        of each (as the shipped rule was fitted, training/unknown_refit.py)."""
        sets: list[Dataset] = [CachedImageDataset(train, pre)]
        if args.refit_views:
            if not train_photos:
                train_photos.append(load_photos(train, TEACHER_INPUTS[DEFAULT_TEACHER].size, MaskStore(args.masks)))
            sets.append(SeededViews(train_photos[0], view_seeds(len(train), args.refit_views, VIEW_SEED), pre))
        return ConcatDataset(sets)

    def renderings(pre: PreprocessConfig) -> dict[str, tuple[Dataset, Dataset]]:
        return {c: (Rendered(known, c, 11, pre), Rendered(foreign, c, 12, pre)) for c in ("board", "backdrops")}

    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        model = ckpt.build_model().eval()
        params = prepare_params(ckpt.unknown)
        features = args.features or feature_source(ckpt.unknown)
        descriptor = scorer_descriptor(model, features, (ckpt.unknown or {}).get("descriptor_blocks"))  # what the stored rule (and every distance scorer here) measures
        _, train_f, train_y = logits_and_features(model, loader(fit_set(ckpt.preprocess)), torch.device("cpu"), descriptor)
        fitted = {m: feature_params(m, train_f, train_y, len(names)) for m in METHODS}
        for condition, (kds, fds) in renderings(ckpt.preprocess).items():
            kl, kf, _ = logits_and_features(model, loader(kds), torch.device("cpu"), descriptor)
            fl, ff, _ = logits_and_features(model, loader(fds), torch.device("cpu"), descriptor)
            row: dict[str, Any] = {"checkpoint": str(path), "condition": condition, "stored_rule": (ckpt.unknown or {}).get("method", "msp"), "features": features,
                                   "known_accuracy": round(float((kl.argmax(1) == np.array(photos.labels)).mean()), 3)}
            kconf = softmax(kl, ckpt.temperature).max(1)
            fconf = softmax(fl, ckpt.temperature).max(1)
            if features == feature_source(ckpt.unknown):  # the stored rule's parameters belong to its own features
                row.update(rule_row(unknown_scores(kl, kf, params, ckpt.temperature), kconf, unknown_scores(fl, ff, params, ckpt.temperature), fconf, groups))
            for m in METHODS:
                prm = {"method": m, **prepare_params(fitted[m])}  # type: ignore[dict-item]
                row[m] = scorer_row(raw_scores(m, kl, kf, prm, ckpt.temperature), raw_scores(m, fl, ff, prm, ckpt.temperature), groups)
            rows.append(row)
            print(json.dumps(row))
            if condition == "board" and args.loco:
                rows.append({"checkpoint": str(path), "features": features, "leave_one_class_out": leave_one_class_out(train_f, train_y, len(train), kf, np.array(photos.labels), names)})
                print(json.dumps(rows[-1]))
    if args.teacher is not None:
        net, spec, _ = teacher_from_payload(torch.load(args.teacher, map_location="cpu", weights_only=False), args.teacher)
        for condition, (kds, fds) in renderings(spec.preprocess).items():
            with torch.inference_mode():
                kl = torch.cat([net(x) for x, _ in loader(kds)]).numpy()
                fl = torch.cat([net(x) for x, _ in loader(fds)]).numpy()
            row = {"checkpoint": str(args.teacher), "condition": condition, "known_accuracy": round(float((kl.argmax(1) == np.array(photos.labels)).mean()), 3),
                   "msp": scorer_row(1 - softmax(kl).max(1), 1 - softmax(fl).max(1), groups)}
            rows.append(row)
            print(json.dumps(row))
    if args.imagenet:
        rows += imagenet_rows(renderings(TEACHER_INPUTS[DEFAULT_TEACHER]), fit_set, groups)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
