"""The unit file, checked by systemd itself: `systemd-analyze verify` and `security --offline`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "wastesort.service"
MAX_EXPOSURE = 3.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def unit_settings(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (keys may repeat, e.g. DeviceAllow)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def runnable_copy(tmp_path: Path, unit: Path = UNIT) -> Path:
    """The unit with ExecStart pointing at a binary that exists here (the venv is not installed)."""
    copy = tmp_path / "wastesort.service"
    text = re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", unit.read_text(), flags=re.M)
    copy.write_text(text)
    return copy


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    proc = analyze("verify", str(runnable_copy(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above is real: a typo in a directive name makes it complain."""
    copy = runnable_copy(tmp_path)
    copy.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHoem=yes"))
    proc = analyze("verify", str(copy), cwd=tmp_path)
    assert "ProtectHoem" in proc.stderr


@needs_analyze
def test_security_exposure_at_most_3(tmp_path: Path) -> None:
    proc = analyze("security", "--offline=true", "--no-pager", str(runnable_copy(tmp_path)), cwd=tmp_path)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE
    # The device allow-list is exactly camera + serial adapters (+ the rtc read access ProtectClock adds).
    device_line = next(line for line in proc.stdout.splitlines() if "DeviceAllow=" in line)
    for dev in ("char-ttyUSB:rw", "char-ttyACM:rw", "char-video4linux:rw"):
        assert dev in device_line
    assert "AF_PACKET" in proc.stdout and "Service cannot allocate packet sockets" in proc.stdout


@needs_analyze
def test_security_of_an_unhardened_unit_is_worse(tmp_path: Path) -> None:
    """Sanity check of the measurement: the same unit without its hardening block scores far worse."""
    text = UNIT.read_text()
    bare = text.split("# --- hardening")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    copy = tmp_path / "bare.service"
    copy.write_text(re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", bare, flags=re.M))
    proc = analyze("security", "--offline=true", "--no-pager", str(copy), cwd=tmp_path)
    exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    assert exposure > 6.0


def test_service_contract() -> None:
    """What the daemon and the site rely on, independent of systemd-analyze."""
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert float(s["WatchdogSec"][0]) > 0
    assert s["Restart"] == ["on-failure"] and "StartLimitBurst" in s and "StartLimitIntervalSec" in s
    assert s["User"] == ["wastesort"] and set(s["SupplementaryGroups"][0].split()) == {"dialout", "video"}
    assert s["ConfigurationDirectory"] == ["wastesort"] and s["StateDirectory"] == ["wastesort"]
    assert s["LoadCredential"] == ["mqtt-password:/etc/wastesort/mqtt-password"]
    assert s["ExecStart"] == ["/opt/wastesort/venv/bin/wastesort run --config /etc/wastesort/wastesort.toml"]
    assert s["DevicePolicy"] == ["closed"]
    assert sorted(s["DeviceAllow"]) == ["char-ttyACM rw", "char-ttyUSB rw", "char-video4linux rw"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert s[key] == ["yes"]
    assert s["ProtectSystem"] == ["strict"] and s["CapabilityBoundingSet"] == [""]
    assert s["SystemCallFilter"][0] == "@system-service"
    # Devices stay visible (a private /dev would hide the camera and the serial adapter).
    assert s.get("PrivateDevices", ["no"]) == ["no"]
    # ProtectSystem=strict: the only writable place is the state directory, which is also the cwd.
    assert s["WorkingDirectory"] == ["/var/lib/wastesort"]
