"""Shared helpers and fixtures for the daemon tests: a real mosquitto broker, an MQTT
collector, the controller simulator (in-process or as a process), belt videos and a
tiny real model. Test modules import the fixtures they use from here."""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from daemon.conveyor_sim import SimVideo, load_samples, render_conveyor
from daemon.settings import Settings, load_settings
from daemon.sim_controller import SimController

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
REPO = Path(__file__).resolve().parents[1]

# Test belt: 1 px = 1 mm, 400 mm/s; gates close behind the camera so a run is short.
SPEED_MM_S = 400.0
GATES = {1: 700.0, 2: 760.0, 3: 820.0, 4: 880.0}
LEAD_MS = 10.0
CLASS_TO_GATE = {"cardboard": 1, "paper": 1, "glass": 2, "metal": 3, "plastic": 3, "trash": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


class Broker:
    """A mosquitto on 127.0.0.1 with persistence, so a stopped/restarted broker keeps sessions."""

    def __init__(self, workdir: Path) -> None:
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nautosave_interval 1\n"
            f"user {getpass.getuser()}\n"  # as root, mosquitto would drop to 'mosquitto' and fail to save
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "ab")
        )
        if not wait_for(self._listening, 5):
            raise RuntimeError("mosquitto did not start")
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    d = tmp_path / "mosquitto"
    d.mkdir()
    b = Broker(d).start()
    yield b
    b.stop()


@dataclass
class Collector:
    """Subscribes like `mosquitto_sub -t 'wastesort/#' -v` (persistent session, QoS 1) and keeps everything."""

    host: str
    port: int
    topic: str = "wastesort/#"
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Collector:
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{self.port}", clean_session=False)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(self.topic, qos=1)
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 1)
        c.connect(self.host, self.port)
        c.loop_start()
        self.client = c
        assert self._subscribed.wait(5), "collector could not subscribe"
        return self

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, suffix: str) -> list[Any]:
        """Payloads (JSON decoded when possible) of messages whose topic ends with ``/suffix``."""
        out = []
        with self.lock:
            msgs = list(self.messages)
        for topic, payload, _ in msgs:
            if topic.endswith("/" + suffix):
                try:
                    out.append(json.loads(payload))
                except ValueError:
                    out.append(payload.decode())
        return out

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def collector(broker: Broker) -> Iterator[Collector]:
    c = Collector(broker.host, broker.port).start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model_path: Path) -> Any:
    from daemon.classify import load_model
    from daemon.settings import ClassifySettings

    return load_model(ClassifySettings(model_path=tiny_model_path, num_threads=1))


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimController]:
    s = SimController(tmp_path / "gate-controller", n_gates=4).start()
    yield s
    s.stop()


class SimProcess:
    """`wastesort sim-controller` as a separate process, which a test can kill (USB unplug) and restart."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.proc: subprocess.Popen[str] | None = None
        self.fires: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None

    def start(self) -> SimProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "sim-controller", "--link", str(self.link)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())
        assert first["event"] == "ready"
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.fires.append(json.loads(line))

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            if self._reader is not None:
                self._reader.join(timeout=2)
        self.proc = None


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[SimProcess]:
    p = SimProcess(tmp_path / "gate-controller-proc").start()
    yield p
    p.kill()


def belt_video(path: Path, n_items: int, speed_px_s: float = SPEED_MM_S, spacing_px: int = 160) -> SimVideo:
    return render_conveyor(path, load_samples(), n_items, speed_px_s=speed_px_s, spacing_px=spacing_px)


def make_settings(
    video: SimVideo | Path | str,
    serial_port: Path | str | None,
    model_path: Path | None = None,
    broker: Broker | None = None,
    **sections: dict[str, Any],
) -> Settings:
    """Settings for the test belt; ``sections`` override/extend individual sections."""
    src = str(video.path) if isinstance(video, SimVideo) else str(video)
    base: dict[str, Any] = {
        "camera": {"source": src, "realtime": True, "reconnect_delay_s": 0.2, "reconnect_max_delay_s": 0.5},
        "belt": {"region": [0, 0, 640, 240], "speed_mm_s": SPEED_MM_S, "px_per_mm": 1.0},
        "classify": {"model_path": str(model_path) if model_path else None, "confidence_threshold": 0.0,
                     "unknown_threshold": 1.0, "num_threads": 1},
        "gates": {str(g): {"distance_mm": d, "lead_time_ms": LEAD_MS, "pulse_ms": 50} for g, d in GATES.items()},
        "class_to_gate": dict(CLASS_TO_GATE),
        "reject_gate": 4,
        "serial": {"enabled": serial_port is not None, "port": str(serial_port or "/nonexistent"),
                   "reconnect_delay_s": 0.1, "reconnect_max_delay_s": 0.3, "heartbeat_s": 0.5},
        "mqtt": {"enabled": broker is not None, "host": broker.host if broker else "127.0.0.1",
                 "port": broker.port if broker else 1883, "line_id": "test", "stats_interval_s": 1.0,
                 "reconnect_min_delay_s": 1, "reconnect_max_delay_s": 1},
        "log": {"level": "warning"},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **values}
        else:
            base[name] = values
    return load_settings(None, **base)


def expected_fire_time(video: SimVideo, item_frame: int, t_capture: float, item_index: int, gate: int) -> float:
    """Ground truth: when the item's centre reaches the gate minus the lead time, on the run's monotonic clock.

    The frame the item was decided on anchors video time to the run's clock.
    """
    it = video.items[item_index]
    t_video_gate = it.time_at(GATES[gate], video.speed_px_s)
    return t_capture + (t_video_gate - item_frame / video.fps) - LEAD_MS / 1000.0


