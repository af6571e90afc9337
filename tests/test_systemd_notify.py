"""sd_notify as the unit's Type=notify + WatchdogSec rely on it, over a real AF_UNIX datagram socket.

First daemon/notify.py on its own, then the real `wastesort run` process: READY once camera and
serial controller are up, WATCHDOG while frames flow, STATUS, and STOPPING on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import tomlkit

from daemon.notify import SystemdNotifier, watchdog_interval_s
from daemon.sim_controller import SimController

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_notifier_messages(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = SystemdNotifier(address=path)
    assert n.enabled
    assert n.ready("sorting 4 gates")
    assert sock.recv(4096) == b"READY=1\nSTATUS=sorting 4 gates"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.status("waiting for camera")
    assert sock.recv(4096) == b"STATUS=waiting for camera"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    n.close()
    assert not n.notify("READY=1")


def test_notify_socket_from_environment_and_abstract_namespace(monkeypatch: pytest.MonkeyPatch,
                                                               notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert SystemdNotifier().watchdog() and sock.recv(4096) == b"WATCHDOG=1"

    name = f"wastesort-test-{os.getpid()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0" + name)  # systemd may hand out "@name" sockets
    abstract.settimeout(5)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert SystemdNotifier().ready("ok") and abstract.recv(4096) == b"READY=1\nSTATUS=ok"
    finally:
        abstract.close()

    monkeypatch.delenv("NOTIFY_SOCKET")
    outside = SystemdNotifier()
    assert not outside.enabled and not outside.ready("x")  # outside systemd: a no-op


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")  # WatchdogSec=30
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # systemd watches another process
    assert watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval_s() is None


def _frames(folder: Path, n: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    belt = cv2.GaussianBlur(rng.integers(60, 200, (120, 160, 3), dtype=np.uint8), (0, 0), 1.5)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), belt)


def _receive(sock: socket.socket, until: bytes, deadline: float) -> list[bytes]:
    got: list[bytes] = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096)
        except TimeoutError:
            break
        got.append(msg)
        if until in msg:
            return got
    raise AssertionError(f"no {until!r} in time; received {got!r}")


def test_daemon_run_speaks_sd_notify(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    from model.testing import make_tiny_checkpoint

    sock, path = notify_socket
    _frames(tmp_path / "frames", 400)  # 20 s at 20 fps: far longer than the test
    sim = SimController(tmp_path / "gate-controller", n_gates=4).start()
    config = {
        "camera": {"source": str(tmp_path / "frames"), "realtime": True, "folder_fps": 20.0},
        "belt": {"region": [0, 0, 160, 120], "px_per_mm": 1.0},
        "classify": {"model_path": str(make_tiny_checkpoint(tmp_path / "tiny.pt")), "num_threads": 1},
        "serial": {"port": str(sim.link)},
        "mqtt": {"enabled": False},
        "log": {"level": "warning", "format": "json"},
    }
    cfg = tmp_path / "wastesort.toml"
    cfg.write_text(tomlkit.dumps(config))
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}  # WatchdogSec=1: ping every 0.5 s
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before_ready = _receive(sock, b"READY=1", time.monotonic() + 90)
        assert all(m.startswith(b"STATUS=") for m in before_ready[:-1])
        assert b"STATUS=" in before_ready[-1]
        after = _receive(sock, b"WATCHDOG=1", time.monotonic() + 10)
        assert any(m == b"WATCHDOG=1" for m in after)
        proc.send_signal(signal.SIGTERM)
        stopping = _receive(sock, b"STOPPING=1", time.monotonic() + 20)
        assert stopping[-1].startswith(b"STOPPING=1\nSTATUS=")
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sim.stop()
