"""scripts/unknown_foreign.py's pieces: cut-out photos read from their alpha, TrashNet's board with
its item painted out, and the leave-one-class-out table on fixed features."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "unknown_foreign.py"
SAMPLES = Path(__file__).resolve().parent.parent / "daemon" / "samples"


@pytest.fixture(scope="module")
def script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("unknown_foreign", SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["unknown_foreign"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_stamps_boards_and_placement(script, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    photo = cv2.imread(str(sorted((SAMPLES / "metal").iterdir())[0]))
    h, w = photo.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, 255, -1)
    (tmp_path / "stamps" / "food").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "stamps" / "food" / "item.png"), np.dstack([photo, alpha]))
    cv2.imwrite(str(tmp_path / "stamps" / "flat.png"), photo)  # no alpha channel: refused
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\nfood food/item.png\n")
    (group, rgb, a), = script.read_stamps(tmp_path / "stamps", listing)
    assert group == "food" and a.shape == (2 * (h // 3) + 1, 2 * (w // 4) + 1) and rgb.shape[:2] == a.shape  # cropped to the alpha
    listing.write_text("other flat.png\n")
    with pytest.raises(ValueError, match="alpha channel"):
        script.read_stamps(tmp_path / "stamps", listing)
    with pytest.raises(FileNotFoundError, match="tuxpaint-stamps-default"):
        script.read_stamps(tmp_path / "nowhere", listing)

    rgb_photo = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    board = script.empty_board(rgb_photo, alpha)
    inside = alpha > 0
    far = ~cv2.dilate(alpha, np.ones((61, 61), np.uint8)).astype(bool)  # beyond the painted-out region and its feathered edge
    assert np.array_equal(board[far], rgb_photo[far])
    assert board[inside].std() < rgb_photo[inside].std()  # the item is painted out: smoother than before
    items = script.foreign_items([(group, rgb, a)], [board], placements=3, seed=0)
    assert len(items.images) == 3 and items.groups == ["food"] * 3
    for image, mask in zip(items.images, items.masks):
        assert image.shape == board.shape and 0.05 < (mask > 128).mean() < 0.9


def test_leave_one_class_out_rejects_a_far_class_and_keeps_a_near_one(script) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [1, 0], [0, 6], [40, 40]], float)  # a and b overlap; the last class lies far from all
    train_y = np.repeat(np.arange(4), 60)
    train_f = centres[train_y] + rng.normal(0, 1, (len(train_y), 2))
    val_y = np.repeat(np.arange(4), 20)
    val_f = centres[val_y] + rng.normal(0, 1, (len(val_y), 2))
    table = script.leave_one_class_out(train_f, train_y, len(train_y), val_f, val_y, ["a", "b", "c", "far"])
    assert table["far"]["rejected@95"] == 1.0 and table["far"]["images"] == 80
    assert table["a"]["rejected@95"] < 0.5  # on top of b: little to tell it apart
    assert table["mean"]["auroc"] == pytest.approx(np.mean([table[k]["auroc"] for k in "abc"] + [table["far"]["auroc"]]), abs=1e-3)
