"""review -> finetune -> export --install on real files: tiny checkpoints, real photos, real
JPEG crops written by the daemon's collector; and a clear error for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import cv2
import pytest
import torch

from daemon.collect import CropCollector
from daemon.events import ItemEvent
from daemon.settings import CollectSettings
from model.checkpoint import load_checkpoint
from model.testing import DEFAULT_CLASSES, make_tiny_checkpoint
from training.cli import main as train_main


def collect_from_folder(folder: Path, out: Path, predicted: str = "glass", limit: int = 4) -> dict[int, str]:
    """What the daemon would have saved for crops of these photos: all predicted ``predicted``.
    Returns item id -> true class."""
    c = CropCollector(CollectSettings(directory=out, policy="every"), "line1").start()
    truth: dict[int, str] = {}
    item = 0
    for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(cls_dir.iterdir())[:limit]:
            item += 1
            e = ItemEvent(id=item, run="r1", frame=item, t_capture=0.0, captured_at=time.time(), label=predicted,
                          confidence=0.4, scores={c: 0.1 for c in DEFAULT_CLASSES}, unknown=0.2, decision="sort",
                          reject_reason=None, gate=2, position_mm=300.0, due=1.0, latency_ms=3.0, partial_view=False)
            assert c.submit(e, [cv2.imread(str(f))], "abc")
            truth[item] = cls_dir.name
    c.stop()
    return truth


def numbers_by_item(review: Path) -> dict[int, int]:
    """item id -> review number, from labels.json (the file name carries the item id)."""
    images = json.loads((review / "labels.json").read_text())["images"]
    return {int(Path(e["file"]).stem.split("-")[-2]): e["number"] for e in images}


def test_review_sheets_corrections_and_moves(image_folder: Path, tmp_path: Path) -> None:
    collected, review = tmp_path / "collected", tmp_path / "review"
    truth = collect_from_folder(image_folder, collected, limit=2)
    assert train_main(["review", str(collected), "--out", str(review)]) == 0
    assert sorted(p.name for p in (review / "images").iterdir()) == ["glass"]
    assert len(list((review / "images" / "glass").iterdir())) == len(truth) == 12
    sheet = cv2.imread(str(review / "sheets" / "glass-1.png"))
    assert sheet is not None and sheet.shape[1] == 8 * 128
    assert "ok glass" in (review / "corrections.txt").read_text()

    num = numbers_by_item(review)
    lines = [f"{num[i]} {cls}" for i, cls in truth.items() if cls not in ("glass", "trash")]
    trash = [num[i] for i, cls in truth.items() if cls == "trash"]
    lines += [f"{trash[0]} drop", "ok glass"]
    (review / "corrections.txt").write_text("\n".join(lines) + "\n")
    # a person moved one trash crop by hand
    moved = next(p for p in (review / "images" / "glass").iterdir() if f"-{[i for i, c in truth.items() if c == 'trash'][1]:06d}-" in p.name)
    (review / "images" / "trash").mkdir()
    moved.rename(review / "images" / "trash" / moved.name)
    assert train_main(["review", str(collected), "--out", str(review), "--apply"]) == 0
    folders = {p.name: len(list(p.iterdir())) for p in (review / "images").iterdir()}
    assert folders == {"cardboard": 2, "glass": 2, "metal": 2, "paper": 2, "plastic": 2, "trash": 1}
    labels = json.loads((review / "labels.json").read_text())["images"]
    assert sum(e["confirmed"] for e in labels) == 11 and sum(e["label"] is None for e in labels) == 1
    assert all(e["predicted"] == "glass" for e in labels)
    # applying again changes nothing; numbers stay stable
    assert train_main(["review", str(collected), "--out", str(review), "--apply"]) == 0
    assert {p.name: len(list(p.iterdir())) for p in (review / "images").iterdir()} == folders


def test_review_errors(tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert train_main(["review", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "holds no collected items" in capsys.readouterr().err
    collected, review = tmp_path / "collected", tmp_path / "review"
    collect_from_folder(image_folder, collected, limit=1)
    assert train_main(["review", str(collected), "--out", str(review)]) == 0
    (review / "corrections.txt").write_text("1 metal\n2 platsic\n99 glass\n")
    assert train_main(["review", str(collected), "--out", str(review), "--apply"]) == 2
    err = capsys.readouterr().err
    assert "nothing was changed" in err and "unknown class 'platsic'" in err and "no item numbered 99" in err
    assert len(list((review / "images" / "glass").iterdir())) == 6  # item 1 was not moved either
    (review / "corrections.txt").write_text("1 textile\n")
    assert train_main(["review", str(collected), "--out", str(review), "--apply"]) == 2
    assert "--new-class textile" in capsys.readouterr().err
    assert train_main(["review", str(collected), "--out", str(review), "--apply", "--new-class", "textile"]) == 0
    assert len(list((review / "images" / "textile").iterdir())) == 1


def site_folder(image_folder: Path, root: Path, classes: dict[str, int]) -> Path:
    """A site ImageFolder: crops of real photos (flipped, as another camera would see them)."""
    for cls, n in classes.items():
        src = image_folder / cls if (image_folder / cls).is_dir() else image_folder / "trash"
        (root / cls).mkdir(parents=True)
        for i, f in enumerate(sorted(src.iterdir())[:n]):
            cv2.imwrite(str(root / cls / f"{cls}{i}.jpg"), cv2.flip(cv2.imread(str(f)), 0))
    return root


def test_finetune_adds_a_class_and_reports_before_after(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = make_tiny_checkpoint(tmp_path / "init.pt")
    site = site_folder(image_folder, tmp_path / "site", {"glass": 4, "metal": 4, "textile": 6})
    out = tmp_path / "ft.pt"
    args = ["finetune", "--init", str(init), "--data", str(site), "--base", str(image_folder), "--run-dir",
            str(tmp_path / "run"), "--out", str(out), "--epochs", "2", "--base-per-class", "3", "--threads", "1"]
    assert train_main(args) == 2
    assert "--new-class textile" in capsys.readouterr().err
    assert train_main([*args, "--new-class", "textile"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["new_classes"] == ["textile"] and report["classes"] == DEFAULT_CLASSES + ["textile"]
    for key in ("site_val_accuracy_before", "site_val_accuracy_after", "base_val_accuracy_before", "base_val_accuracy_after"):
        assert 0.0 <= report[key] <= 1.0
    assert report["site_val"] == 4 and report["base_val"] == 6  # one per class of 8 at 0.15; 1+1+2 site
    ckpt = load_checkpoint(out)
    assert ckpt.class_names[-1] == "textile" and ckpt.config.num_classes == 7
    init_ckpt = load_checkpoint(init)
    assert ckpt.preprocess == init_ckpt.preprocess  # the checkpoint's own input, not a default
    ft = ckpt.meta["finetune"]
    assert ft["site_images"] == {"glass": 4, "metal": 4, "textile": 6} and ft["new_classes"] == ["textile"]
    assert len(ft["init_checksum"]) == 64 and ckpt.meta["base_split"]
    # the old class rows survived the head growth (fine-tuning moved them a little)
    assert not torch.equal(ckpt.state_dict["head.weight"][:6], init_ckpt.state_dict["head.weight"])
    assert ckpt.state_dict["head.weight"].shape[0] == 7


def test_finetune_errors(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = make_tiny_checkpoint(tmp_path / "init.pt")
    (tmp_path / "empty").mkdir()
    base = ["--run-dir", str(tmp_path / "run"), "--epochs", "1"]
    assert train_main(["finetune", "--init", str(init), "--data", str(tmp_path / "empty"), *base]) == 2
    assert "has no class sub-folders" in capsys.readouterr().err
    site = site_folder(image_folder, tmp_path / "site", {"glass": 3, "platsic": 3})
    assert train_main(["finetune", "--init", str(init), "--data", str(site), *base]) == 2
    err = capsys.readouterr().err
    assert "classes the model does not know: ['platsic']" in err and "rename the folder" in err
    # a checkpoint of another architecture: weights that do not fit the config they came with
    payload = torch.load(init, weights_only=True)
    payload["config"]["d_model"] = payload["config"]["d_model"] * 2
    torch.save(payload, tmp_path / "other.pt")
    good_site = site_folder(image_folder, tmp_path / "site2", {"glass": 3})
    assert train_main(["finetune", "--init", str(tmp_path / "other.pt"), "--data", str(good_site), *base]) == 2
    assert "another architecture" in capsys.readouterr().err
    torch.save({"model": {}, "arch": "resnet50"}, tmp_path / "teacher.pt")
    assert train_main(["finetune", "--init", str(tmp_path / "teacher.pt"), "--data", str(good_site), *base]) == 2
    assert "not a wastesort student checkpoint" in capsys.readouterr().err


def test_install_backup_checksum_and_refusal(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "live" / "model.pt"
    first = make_tiny_checkpoint(tmp_path / "a.pt", seed=1)
    assert train_main(["export", "--checkpoint", str(first), "--install", str(target)]) == 0  # nothing to compare
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    import hashlib

    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert out["checksum"] == digest and (target.parent / "model.pt.sha256").read_text().split()[0] == digest
    second = make_tiny_checkpoint(tmp_path / "b.pt", seed=2)
    args = ["export", "--checkpoint", str(second), "--install", str(target), "--base", str(image_folder)]
    # margin -1: the candidate must be better by a whole split's worth: impossible, so it is refused
    assert train_main([*args, "--margin", "-1"]) == 2
    assert "not installed" in capsys.readouterr().err
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest  # untouched
    assert train_main([*args, "--margin", "-1", "--force"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["backup"] and hashlib.sha256(Path(out["backup"]).read_bytes()).hexdigest() == digest
    assert out["checksum"] == hashlib.sha256(second.read_bytes()).hexdigest()
    assert train_main(["export", "--checkpoint", str(first), "--install", str(target)]) == 2
    assert "without the base dataset" in capsys.readouterr().err
    payload = torch.load(first, weights_only=True)
    payload["config"]["d_model"] *= 2  # weights of another architecture than the config says
    torch.save(payload, tmp_path / "other.pt")
    assert train_main(["export", "--checkpoint", str(tmp_path / "other.pt"), "--onnx", str(tmp_path / "o.onnx"),
                       "--install", str(target), "--force"]) == 2
    assert "do not fit its architecture" in capsys.readouterr().err
    assert out["checksum"] == hashlib.sha256(target.read_bytes()).hexdigest()  # still the forced install
    assert train_main(["export", "--checkpoint", str(first), "--install", str(target), "--base", str(image_folder),
                       "--margin", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= out["base_val_accuracy_new"] <= 1 and 0 <= out["base_val_accuracy_installed"] <= 1


def test_install_on_a_full_disk_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "small"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        big = make_tiny_checkpoint(tmp_path / "big.pt")
        assert big.stat().st_size > 32 * 1024
        assert train_main(["export", "--checkpoint", str(big), "--onnx", str(tmp_path / "x.onnx"),
                           "--install", str(d / "model.pt")]) == 2
        assert "no space left" in capsys.readouterr().err
        assert list(d.iterdir()) == []
    finally:
        subprocess.run(["umount", str(d)], check=False)
