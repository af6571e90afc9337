"""systemd service notifications (sd_notify) over the NOTIFY_SOCKET datagram socket, no dependency.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if addr:
            # '@name' is a Linux abstract socket: the leading '@' stands for a NUL byte.
            self._address = "\0" + addr[1:] if addr.startswith("@") else addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send e.g. ``notify("READY=1", "STATUS=sorting")``; return False if it could not be sent."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode("utf-8"), self._address)
            return True
        except OSError as e:
            log.warning("sd_notify_failed", error=str(e))
            return False

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half the WatchdogSec systemd asked for (WATCHDOG_USEC), if this process is the one watched."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
