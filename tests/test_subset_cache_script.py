"""scripts/subset_cache.py: a class-stratified share of a run's training photos, every stored per-view
array cut alike, so `distill` trains on it as on the full run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from training.view_cache import ViewCache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from subset_cache import main as subset_main  # noqa: E402

ROOT = "/data/trashnet"


def _run(tmp_path: Path, per_class: int = 4, views: int = 2) -> tuple[Path, list[list]]:
    run = tmp_path / "src"
    run.mkdir()
    train = [[f"c{c}/p{i}.jpg", c] for i in range(per_class) for c in range(3)]  # classes interleaved, as a split may hold them
    split = {"root": ROOT, "class_names": ["a", "b", "c"], "train": train, "val": [["c0/v.jpg", 0], ["c2/w.jpg", 2]]}
    (run / "split.json").write_text(json.dumps(split))
    n = len(train)
    ViewCache(np.arange(n * views).reshape(n, views), np.random.default_rng(0).normal(size=(n, views, 3)).astype(np.float32),
              ["a", "b", "c"], [f"{ROOT}/{p}" for p, _ in train], "teacher.pt", "log-probabilities", 1, 0.7).save(run / "views.npz")
    stem = np.arange(n * views * 4, dtype=np.float16).reshape(n, views, 4)  # row i belongs to photo i
    np.save(run / "stem.npy", stem)
    (run / "stem.json").write_text(json.dumps({"stem_signature": "abc", "shape": list(stem.shape)}))
    return run, train


def test_a_share_keeps_every_class_and_cuts_every_array_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, train = _run(tmp_path)
    out = tmp_path / "half"
    assert subset_main([str(src), str(out), "--share", "0.5", "--arrays", "stem.npy"]) == 0
    assert json.loads(capsys.readouterr().out)["train_photos"] == 6
    split = json.loads((out / "split.json").read_text())
    assert sorted(label for _, label in split["train"]) == [0, 0, 1, 1, 2, 2]  # two of each class's four
    assert split["val"] == json.loads((src / "split.json").read_text())["val"] and split["subset"]["share"] == 0.5
    keep = [train.index(row) for row in split["train"]]
    assert keep == sorted(keep)  # the original order, as the cache expects it
    full, cut = ViewCache.load(src / "views.npz"), ViewCache.load(out / "views.npz")
    cut.check_matches(["a", "b", "c"], [f"{ROOT}/{p}" for p, _ in split["train"]])  # what distill checks
    assert np.array_equal(cut.seeds, full.seeds[keep]) and np.array_equal(cut.logits, full.logits[keep])
    assert (cut.targets, cut.paste_share) == (full.targets, full.paste_share)
    stem = np.load(out / "stem.npy")
    assert np.array_equal(stem, np.load(src / "stem.npy")[keep]) and stem.dtype == np.float16
    record = json.loads((out / "stem.json").read_text())
    assert record["shape"] == [6, 2, 4] and record["stem_signature"] == "abc"
    again = tmp_path / "again"
    assert subset_main([str(src), str(again), "--share", "0.5"]) == 0
    assert json.loads((again / "split.json").read_text())["train"] == split["train"]  # the same seed, the same photos


def test_bad_requests_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    src, _ = _run(tmp_path)
    with pytest.raises(SystemExit, match=r"--share must be in \(0, 1\]"):
        subset_main([str(src), str(tmp_path / "none"), "--share", "0"])
    assert not (tmp_path / "none").exists()
    np.save(src / "other.npy", np.zeros((5, 2, 4), np.float32))
    (src / "other.json").write_text(json.dumps({"shape": [5, 2, 4]}))
    with pytest.raises(ValueError, match="holds 5 photos, the view cache 12"):
        subset_main([str(src), str(tmp_path / "bad"), "--share", "0.5", "--arrays", "other.npy"])
    assert not (tmp_path / "bad" / "split.json").exists()
    assert subset_main([str(src), str(tmp_path / "ok"), "--share", "1"]) == 0
    with pytest.raises(SystemExit, match="already holds a split"):
        subset_main([str(src), str(tmp_path / "ok"), "--share", "0.5"])
