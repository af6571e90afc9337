"""systemd/install.sh into a staging root (--root): files, user, enablement, idempotence, uninstall."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from daemon.settings import load_settings
from test_systemd_unit import runnable_copy

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "systemd" / "install.sh"
UNINSTALL = REPO / "systemd" / "uninstall.sh"


def run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60)


def snapshot(root: Path) -> dict[str, str]:
    """Path -> content hash (or link target) of every file under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def group_members(root: Path, group: str) -> list[str]:
    for line in (root / "etc" / "group").read_text().splitlines():
        name, _, _, members = line.split(":")
        if name == group:
            return [m for m in members.split(",") if m]
    return []


def require_sysusers() -> None:
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed (install.sh --root creates the user with it)")


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    require_sysusers()
    root = tmp_path / "root"
    proc = run(INSTALL, "--root", str(root), "--no-venv")
    assert proc.returncode == 0, proc.stderr
    return root


def test_install_creates_everything(staged: Path) -> None:
    unit = staged / "etc/systemd/system/wastesort.service"
    assert unit.read_text() == (REPO / "systemd/wastesort.service").read_text()
    link = staged / "etc/systemd/system/multi-user.target.wants/wastesort.service"
    assert link.is_symlink() and os.readlink(link).endswith("wastesort.service")

    passwd = (staged / "etc/passwd").read_text()
    assert re.search(r"^wastesort:x:\d+:\d+:[^:]*:/var/lib/wastesort:/usr/sbin/nologin$", passwd, re.M)
    assert "wastesort" in group_members(staged, "dialout") and "wastesort" in group_members(staged, "video")

    conf = staged / "etc/wastesort"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o750
    password = conf / "mqtt-password"
    assert password.read_text() == "" and stat.S_IMODE(password.stat().st_mode) == 0o600
    config = conf / "wastesort.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    gid = int(next(line.split(":")[2] for line in (staged / "etc/group").read_text().splitlines()
                   if line.startswith("wastesort:")))
    if os.geteuid() == 0:
        assert config.stat().st_gid == gid  # the service reads it through its group
    # The example, with the broker password pointed at the LoadCredential path, and valid for the daemon.
    text = config.read_text()
    assert '# password_file = "/run/credentials/wastesort.service/mqtt-password"' in text
    assert (conf / "wastesort.toml.example").read_text() == text
    assert load_settings(config).serial.port.startswith("/dev/serial/by-id/")
    assert (staged / "var/lib/wastesort").is_dir()
    assert (staged / "opt/wastesort/docs/systemd.md").is_file()
    assert (staged / "etc/sysusers.d/wastesort.conf").read_text() == (REPO / "systemd/wastesort.sysusers").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_installed_unit_verifies(staged: Path, tmp_path: Path) -> None:
    copy = runnable_copy(tmp_path, staged / "etc/systemd/system/wastesort.service")
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""


def test_install_is_idempotent_and_keeps_the_config(staged: Path) -> None:
    config = staged / "etc/wastesort/wastesort.toml"
    config.write_text(config.read_text().replace("speed_mm_s = 300.0", "speed_mm_s = 412.5"))
    (staged / "etc/wastesort/mqtt-password").write_text("s3cret\n")
    before = snapshot(staged)
    proc = run(INSTALL, "--root", str(staged), "--no-venv")
    assert proc.returncode == 0, proc.stderr
    assert "kept existing" in proc.stdout
    assert snapshot(staged) == before
    assert load_settings(config).belt.speed_mm_s == 412.5
    assert group_members(staged, "dialout") == ["wastesort"]  # not added twice


def test_custom_prefix_rewrites_exec_start(tmp_path: Path) -> None:
    require_sysusers()
    root = tmp_path / "root"
    assert run(INSTALL, "--root", str(root), "--no-venv", "--prefix", "/srv/ws", "--no-enable").returncode == 0
    unit = (root / "etc/systemd/system/wastesort.service").read_text()
    assert "ExecStart=/srv/ws/venv/bin/wastesort run --config /etc/wastesort/wastesort.toml" in unit
    assert not (root / "etc/systemd/system/multi-user.target.wants").exists()


def test_uninstall_keeps_config_then_purge_removes_all(staged: Path) -> None:
    proc = run(UNINSTALL, "--root", str(staged))
    assert proc.returncode == 0, proc.stderr
    assert not (staged / "etc/systemd/system/wastesort.service").exists()
    assert not (staged / "etc/systemd/system/multi-user.target.wants/wastesort.service").is_symlink()
    assert not (staged / "opt/wastesort").exists()
    assert (staged / "etc/wastesort/wastesort.toml").is_file() and "wastesort:" in (staged / "etc/passwd").read_text()
    assert run(UNINSTALL, "--root", str(staged)).returncode == 0  # idempotent too

    proc = run(INSTALL, "--root", str(staged), "--uninstall", "--purge")
    assert proc.returncode == 0, proc.stderr
    assert not (staged / "etc/wastesort").exists() and not (staged / "var/lib/wastesort").exists()
    assert "wastesort" not in (staged / "etc/passwd").read_text()
    assert group_members(staged, "dialout") == [] and group_members(staged, "video") == []


@pytest.mark.parametrize("args, message", [
    (["--start"], "--start cannot be used with --root"),
    ([], "virtualenv cannot be moved"),
    (["--no-venv", "--purge"], "--purge only goes with --uninstall"),
    (["--no-venv", "--frobnicate"], "unknown option"),
])
def test_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run(INSTALL, "--root", str(tmp_path / "r"), *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "r" / "etc").exists()
