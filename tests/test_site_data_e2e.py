"""docs/site-data.md end to end, with a tiny budget: the daemon collects crops from a simulated
belt, the simulator's ground truth plays the reviewer, the student is fine-tuned and installed,
SIGHUP makes the running daemon load it, and decisions go on with the new checksum live."""

from __future__ import annotations

import pytest

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon_fixtures import REPO, Broker, Collector, broker, collector, sim, wait_for  # noqa: F401

from daemon.sim_controller import SimController
from model.testing import make_tiny_checkpoint

PY = sys.executable


def config(path: Path, video: Path, model: Path, collect: Path, serial: Path | None, b: Broker | None) -> Path:
    """The walkthrough's configuration (docs/site-data.md), pointed at this test's files."""
    path.write_text(f"""
reject_gate = 4
[class_to_gate]
cardboard = 1
paper = 1
glass = 2
metal = 3
plastic = 3
trash = 4
[gates.1]
distance_mm = 700
[gates.2]
distance_mm = 760
[gates.3]
distance_mm = 820
[gates.4]
distance_mm = 880
[camera]
source = "{video}"
realtime = {"true" if b else "false"}
[belt]
region = [0, 0, 640, 240]
speed_mm_s = 400.0
px_per_mm = 1.0
[classify]
model_path = "{model}"
num_threads = 1
confidence_threshold = 0.0
unknown_threshold = 1.0
[serial]
enabled = {"true" if serial else "false"}
port = "{serial or '/nonexistent'}"
ack_timeout_ms = 200  # the in-process controller simulator shares a busy 2-core CPU with the training steps
retries = 0  # a retry could never be sent in time after a 200 ms wait (check-config refuses that)
[mqtt]
enabled = {"true" if b else "false"}
host = "{b.host if b else '127.0.0.1'}"
port = {b.port if b else 1883}
line_id = "site"
stats_interval_s = 1.0
[collect]
enabled = true
directory = "{collect}"
policy = "every"
[log]
level = "info"
format = "json"
""")
    return path


def cli(*args: str, timeout: float = 300) -> dict:
    """A step of the walkthrough; at nice 19 as docs/site-data.md advises, so that it never takes
    the CPU from the daemon sorting on the same machine."""
    t = time.monotonic()
    proc = subprocess.run(["nice", "-n", "19", PY, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"{' '.join(args[:3])}: {time.monotonic() - t:.1f} s")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Real time on 2 shared cores while a reload exports and quantises a model beside the line: an
# unlucky scheduling slice can drop a frame or miss one gate deadline (seen about once in four
# runs on the CI-sized machine). The assertions stay exact; a failing run is repeated up to twice.
@pytest.mark.flaky(reruns=2)
def test_collect_review_finetune_install_reload(
    tmp_path: Path, image_folder: Path, broker: Broker, collector: Collector, sim: SimController
) -> None:
    t0 = time.monotonic()
    live = tmp_path / "var" / "model.pt"
    cli("-m", "training.cli", "export", "--checkpoint", str(make_tiny_checkpoint(tmp_path / "tiny.pt")),
        "--install", str(live))
    first = sha256(live)
    collected, review = tmp_path / "var" / "collect", tmp_path / "site"

    # 1. collect on the line (a first shift: 12 items, as fast as the video plays)
    cli("-m", "daemon.sim_site", "render", "--items", "12", "--out", str(tmp_path / "shift1.avi"))
    cfg1 = config(tmp_path / "collect.toml", tmp_path / "shift1.avi", live, collected, None, None)
    run = subprocess.run([PY, "-m", "daemon", "run", "--config", str(cfg1)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    sidecars = sorted(collected.glob("*/*.json"))
    assert len(sidecars) == 12 and all(json.loads(p.read_text())["model_checksum"] == first for p in sidecars)

    # 2. review: contact sheets, then the ground truth plays the person writing corrections.txt
    out = cli("-m", "training.cli", "review", str(collected), "--out", str(review))
    assert out["added"] == 12 and (review / "sheets").is_dir()
    labelled = cli("-m", "daemon.sim_site", "label", "--truth", str(tmp_path / "shift1.truth.json"), "--review", str(review))
    assert labelled["labelled"] == 12 and labelled["unmatched"] == 0
    out = cli("-m", "training.cli", "review", str(collected), "--out", str(review), "--apply")
    assert out["confirmed"] == 12 and sum(out["per_class"].values()) == 12 and len(out["per_class"]) == 6

    # 3. fine-tune on the site crops mixed with the base dataset (tiny budget)
    ft = cli("-m", "training.cli", "finetune", "--init", str(live), "--data", str(review), "--base", str(image_folder),
             "--run-dir", str(tmp_path / "ft"), "--epochs", "1", "--base-per-class", "2", "--site-val-fraction", "0.3",
             "--threads", "1")
    assert ft["site_val"] == 6 and ft["base_val"] == 6 and ft["site_val_accuracy_after"] is not None

    # 4. the next shift runs while the new model is installed and loaded with SIGHUP
    cli("-m", "daemon.sim_site", "render", "--items", "100", "--out", str(tmp_path / "shift2.avi"), "--seed", "1")
    cfg2 = config(tmp_path / "run.toml", tmp_path / "shift2.avi", live, collected, sim.link, broker)
    log_file = tmp_path / "shift2.log"
    with log_file.open("w") as log_out:  # a file, not a pipe: a full pipe would block the daemon
        daemon = subprocess.Popen([PY, "-m", "daemon", "run", "--config", str(cfg2)], cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=log_out)
    try:
        assert wait_for(lambda: len(collector.on("items")) >= 3, 60), "the daemon made no decisions"
        installed = cli("-m", "training.cli", "export", "--checkpoint", ft["checkpoint"], "--install", str(live),
                        "--margin", "1.0")  # tiny one-epoch models: only the mechanics are checked here
        second = installed["checksum"]
        assert second == sha256(live) != first and Path(installed["backup"]).is_file()
        before_reload = len(collector.on("items"))
        daemon.send_signal(signal.SIGHUP)
        assert wait_for(lambda: len(collector.on("model")) >= 2, 60), "no model announcement after SIGHUP"
        reloaded = len(collector.on("items"))
        assert wait_for(lambda: len(collector.on("items")) >= reloaded + 3, 30), "no decisions after the reload"
        daemon.send_signal(signal.SIGTERM)  # the end of the shift: an orderly stop
        daemon.wait(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    stderr = log_file.read_text()
    assert daemon.returncode == 0, stderr[-3000:]
    models = collector.on("model")
    assert [m["checksum"] for m in models] == [first, second] and models[1]["reason"] == "reload"
    assert models[1]["trained_on"]["finetune"]["site_images"] == out["per_class"]
    topics = [t.rsplit("/", 1)[1] for t, _, _ in collector.messages]
    after = topics[topics.index("model", topics.index("model") + 1):].count("items")
    items = collector.on("items")
    assert before_reload < len(items) and after > 0, "no decisions after the reload"
    stats = collector.on("stats")[-1]
    assert stats["model_checksum"] == second and stats["dropped_frames"] == 0 and stats["collect_dropped"] == 0
    failed = [a for a in collector.on("actuations") if not a["acknowledged"]]
    assert stats["items"] == len(items) and stats["actuations_ok"] == len(items), (stats["actuation_errors"], failed)
    log = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "model_changed" and e.get("checksum") == second for e in log)
    print(f"walkthrough wall time: {time.monotonic() - t0:.1f} s")
