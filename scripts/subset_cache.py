"""A learning-curve point without a new teacher pass: a share of a run's training photos, cut out of
its stored views.

Whether the recipe gains from more photos decides whether a final fit on every photo is worth
shipping (docs/results.md, "A final fit on every photo"). Measuring it means training the same
recipe on fewer photos and scoring the same held-out ones. The teacher's targets, stem outputs and
ImageNet features of every view are already stored per photo (`teacher-cache`: arrays of shape
(photos, views, ...), in split order), so a smaller run is a slice of them. This writes OUT_RUN with
`split.json` (a class-stratified share of the training photos in their original order, the same
validation photos), `views.npz` and every given per-view array sliced alike, each array's JSON
record copied with its new shape. `distill --run-dir OUT_RUN --views OUT_RUN/views.npz
--stem-features OUT_RUN/<stem> [--imagenet-features OUT_RUN/imagenet_features.npy]` then trains on it.

    .venv/bin/python scripts/subset_cache.py runs/s0 runs/lc50 --share 0.5 --arrays stem_features.npy imagenet_features.npy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.view_cache import ViewCache


def stratified_share(labels: list[int], share: float, seed: int) -> np.ndarray:
    """Sorted indices of round(share * n) photos of every class (at least one), drawn with `seed`."""
    if not 0 < share <= 1:
        raise ValueError(f"--share must be in (0, 1], got {share}")
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    keep = [rng.permutation(np.flatnonzero(y == c))[: max(1, round(share * int((y == c).sum())))] for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def slice_array(src: Path, dst: Path, keep: np.ndarray, n_photos: int) -> None:
    """One per-view array (photos first) and its JSON record, cut to the kept photos."""
    array = np.load(src, mmap_mode="r")
    if array.shape[0] != n_photos:
        raise ValueError(f"{src} holds {array.shape[0]} photos, the view cache {n_photos}: not arrays of the same cache")
    np.save(dst, np.ascontiguousarray(array[keep]))
    record_src = src.with_suffix(".json")
    if not record_src.is_file():
        raise FileNotFoundError(f"{record_src} (the record of how {src.name} was made) is missing")
    record = json.loads(record_src.read_text())
    record["shape"] = [len(keep), *array.shape[1:]]
    record["subset_of"] = str(src)
    dst.with_suffix(".json").write_text(json.dumps(record, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src_run", type=Path, help="a run with split.json and views.npz (teacher-cache)")
    p.add_argument("out_run", type=Path, help="the new run folder (must not hold a split yet)")
    p.add_argument("--share", type=float, required=True, help="share of every class's training photos kept, in (0, 1]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arrays", nargs="*", default=[], help="per-view arrays in SRC_RUN to slice alike (stem outputs, ImageNet features)")
    args = p.parse_args(argv)
    split = json.loads((args.src_run / "split.json").read_text())
    cache = ViewCache.load(args.src_run / "views.npz")
    if len(split["train"]) != len(cache.photo_paths):
        raise SystemExit(f"{args.src_run}: split.json has {len(split['train'])} training photos, views.npz {len(cache.photo_paths)}")
    if (args.out_run / "split.json").exists():
        raise SystemExit(f"{args.out_run} already holds a split: choose a new folder")
    try:
        keep = stratified_share([int(label) for _, label in split["train"]], args.share, args.seed)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    args.out_run.mkdir(parents=True, exist_ok=True)
    for name in args.arrays:
        slice_array(args.src_run / name, args.out_run / name, keep, len(cache.photo_paths))
    ViewCache(cache.seeds[keep], cache.logits[keep], cache.class_names, [cache.photo_paths[i] for i in keep], cache.teacher,
              cache.targets, cache.teacher_count, cache.paste_share).save(args.out_run / "views.npz")
    (args.out_run / "split.json").write_text(json.dumps({**split, "train": [split["train"][i] for i in keep],
                                                         "subset": {"of": str(args.src_run / "split.json"), "share": args.share, "seed": args.seed}}, indent=1))
    print(json.dumps({"out_run": str(args.out_run), "train_photos": int(len(keep)), "of": len(cache.photo_paths), "val_photos": len(split["val"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
