"""The committed splits: the held-out one every figure is measured on, and the final fit's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from training.data import load_split

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "training" / "splits"


def _rows(name: str) -> dict:
    return json.loads((SPLITS / name).read_text())


def test_the_held_out_split_keeps_validation_photos_out_of_training() -> None:
    d = _rows("trashnet_seed0.json")
    train, val = {p for p, _ in d["train"]}, {p for p, _ in d["val"]}
    assert len(train) == len(d["train"]) == 1717 and len(val) == len(d["val"]) == 302
    assert not train & val


def test_the_final_fit_trains_on_every_photo_but_the_demos() -> None:
    held, final = _rows("trashnet_seed0.json"), _rows("trashnet_all_seed0.json")
    assert final["class_names"] == held["class_names"] and final["root"] == held["root"]
    as_set = lambda rows: {(p, int(y)) for p, y in rows}  # noqa: E731
    demo = {(f"{p.parent.name}/{p.name}", held["class_names"].index(p.parent.name)) for p in (ROOT / "daemon" / "samples").glob("*/*.jpg")}
    assert len(demo) == 24
    assert as_set(final["val"]) == demo  # the demo belt shows photos the shipped model never trained on
    assert as_set(final["train"]) == (as_set(held["train"]) | as_set(held["val"])) - demo
    assert len(final["train"]) == 2019 - 24  # no photo twice
    names, train, val = load_split(SPLITS / "trashnet_all_seed0.json", Path("/data"))
    assert names == held["class_names"] and len(train) == 1995 and len(val) == 24


def test_the_final_fit_refuses_a_run_directory_holding_another_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text((SPLITS / "trashnet_seed0.json").read_text())
    done = subprocess.run(["bash", str(ROOT / "scripts" / "train-default.sh"), str(run)], env={"FINAL_FIT": "1", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "not the final fit's split" in done.stderr
    assert sorted(p.name for p in run.iterdir()) == ["split.json"]  # nothing trained, nothing written


def test_the_final_fit_refuses_another_teacher_architecture(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "train-default.sh"), str(run)],
                          env={"FINAL_FIT": "1", "TEACHER_ARCH": "efficientnet_lite2", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "TEACHER_ARCH=efficientnet_lite2 does not apply" in done.stderr
    assert list(run.iterdir()) == []  # refused before it wrote a split or trained a teacher
