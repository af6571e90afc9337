"""[collect]: policies, JPEG + sidecar per item, the disk cap, drops when the writer lags, a full
disk (a real tmpfs), and the daemon saving the crops it classified on a real belt video."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from daemon_fixtures import belt_video, make_settings, tiny_classifier, tiny_model_path, wait_for  # noqa: F401

from daemon.collect import CollectError, CropCollector
from daemon.events import ItemEvent
from daemon.model_reload import file_checksum
from daemon.pipeline import run_pipeline
from daemon.settings import CollectSettings, ConfigError, load_settings


def event(item_id: int, confidence: float = 0.9, reason: str | None = None, run: str = "run1") -> ItemEvent:
    return ItemEvent(id=item_id, run=run, frame=10 * item_id, t_capture=1.0, captured_at=time.time(), label="glass",
                     confidence=confidence, scores={"glass": confidence}, unknown=0.1,
                     decision="reject" if reason else "sort", reject_reason=reason, gate=2, position_mm=100.0,
                     due=2.0, latency_ms=5.0, partial_view=False)


def crop(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 80, 3), dtype=np.uint8)


def sidecars(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*/*.json"))]


def test_off_by_default_and_validated() -> None:
    assert load_settings(None).collect.enabled is False
    with pytest.raises(ConfigError, match="collect.policy"):
        load_settings(None, collect={"policy": "sometimes"})


def test_policies_choose_items() -> None:
    def kept(policy: str, **kw: object) -> list[int]:
        c = CropCollector(CollectSettings(policy=policy, **kw), "l1")  # type: ignore[arg-type]
        evs = [event(1, 0.95), event(2, 0.4, "low_confidence"), event(3, 0.6), event(4, 0.9, "unknown"), event(5)]
        return [e.id for e in evs if c.wants(e)]

    assert kept("every") == [1, 2, 3, 4, 5]
    assert kept("low_confidence", low_confidence_below=0.7) == [2, 3]
    assert kept("unknown") == [4]
    assert kept("one_in_n", one_in_n=2) == [1, 3, 5]


def test_jpeg_and_sidecar_per_item(tmp_path: Path) -> None:
    c = CropCollector(CollectSettings(directory=tmp_path / "c", policy="every"), "line7").start()
    img = cv2.resize(crop(), (80, 96), interpolation=cv2.INTER_LINEAR)
    img = cv2.GaussianBlur(img, (9, 9), 0)  # a smooth picture: JPEG keeps it close
    assert c.submit(event(3), [img, crop(1)], "abc123")
    c.stop()
    (meta,) = sidecars(tmp_path / "c")
    assert meta["item_id"] == 3 and meta["line_id"] == "line7" and meta["label"] == "glass"
    assert meta["confidence"] == 0.9 and meta["unknown"] == 0.1 and meta["gate"] == 2
    assert meta["model_checksum"] == "abc123" and meta["time"].endswith("+00:00") and len(meta["crops"]) == 2
    folder = next((tmp_path / "c").iterdir())
    saved = cv2.imread(str(folder / meta["crops"][0]))
    assert saved.shape == img.shape and np.abs(saved.astype(int) - img).mean() < 5  # a JPEG of that crop
    assert c.stats()["collect_saved"] == 1 and c.stats()["collect_dropped"] == 0


def test_disk_cap_deletes_oldest_first_also_across_restarts(tmp_path: Path) -> None:
    d = tmp_path / "c"
    s = CollectSettings(directory=d, policy="every", max_disk_mb=0.05)  # 50 kB: a few noisy 96x80 crops
    c = CropCollector(s, "l").start()
    for i in range(12):
        c.submit(event(i), [crop(i)], "x")
        time.sleep(0.01)
    c.stop()
    kept = [m["item_id"] for m in sidecars(d)]
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert total <= 50_000 and 0 < len(kept) < 12 and kept == list(range(12 - len(kept), 12))
    c2 = CropCollector(s, "l").start()  # a new run counts what is on disk
    c2.submit(event(100, run="run2"), [crop(100)], "x")
    c2.stop()
    after = [m["item_id"] for m in sidecars(d)]
    assert 100 in after and kept[0] not in after
    assert sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) <= 50_000


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    c = CropCollector(CollectSettings(directory=tmp_path / "c", policy="every", queue_size=2), "l")
    # not started: nothing drains the queue, like a stalled disk
    results = [c.submit(event(i), [crop(i)], "x") for i in range(5)]
    assert results == [True, True, False, False, False] and c.stats()["collect_dropped"] == 3


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(CollectError, match="collect.directory .* is not writable"):
        CropCollector(CollectSettings(directory=f / "sub"), "l").start()


@pytest.fixture
def small_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    d = tmp_path / "tmpfs"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", str(d)], check=False)


def test_full_disk_frees_old_items_and_counts_errors(small_tmpfs: Path) -> None:
    alerts: list[str] = []
    big = (np.random.default_rng(0).integers(0, 256, (120, 120, 3))).astype(np.uint8)  # ~25 kB as JPEG
    c = CropCollector(CollectSettings(directory=small_tmpfs, policy="every", max_disk_mb=10), "l",
                      on_alert=lambda k, m: alerts.append(k)).start()
    for i in range(8):
        c.submit(event(i), [big], "x")
        c.stop() if i == 7 else time.sleep(0.02)
    kept = [m["item_id"] for m in sidecars(small_tmpfs)]
    # the cap (10 MB) was never reached: the 64 kB disk was; old items made room for new ones
    assert kept and kept[-1] == 7 and kept[0] > 0 and c.rotated > 0
    huge = np.random.default_rng(1).integers(0, 256, (400, 400, 3)).astype(np.uint8)  # larger than the disk
    c2 = CropCollector(CollectSettings(directory=small_tmpfs, policy="every"), "l",
                       on_alert=lambda k, m: alerts.append(k)).start()
    c2.submit(event(50), [huge], "x")
    c2.stop()
    assert c2.errors == 1 and alerts == ["collect_failed"]
    assert not list(small_tmpfs.glob("*/*.tmp")) and not list(small_tmpfs.glob("*/l-run1-000050-*"))


def test_pipeline_saves_the_crops_it_classified(tmp_path: Path, tiny_model_path: Path) -> None:
    n = 4
    video = belt_video(tmp_path / "belt.avi", n)
    d = tmp_path / "collect"
    settings = make_settings(video, None, model_path=tiny_model_path, camera={"realtime": False},
                             collect={"enabled": True, "directory": str(d), "policy": "every"})
    items: list[ItemEvent] = []
    summary = run_pipeline(settings, on_item=items.append)
    assert summary.items == n
    metas = sidecars(d)
    assert sorted(m["item_id"] for m in metas) == sorted(i.id for i in items)
    by_id = {i.id: i for i in items}
    checksum = file_checksum(tiny_model_path)
    for m in metas:
        e = by_id[m["item_id"]]
        assert (m["label"], m["confidence"], m["gate"], m["line_id"]) == (e.label, e.confidence, e.gate, "test")
        assert m["model_checksum"] == checksum
        img = cv2.imread(str(next(d.glob(f"*/{m['crops'][0]}"))))
        assert img is not None and img.shape[0] >= 50  # a real item crop, not the belt
