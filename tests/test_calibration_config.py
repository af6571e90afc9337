"""The config writer: keeps comments and other keys, backs up, validates with the daemon's loader."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from calibration.cli import main
from calibration.config_writer import apply_updates, describe
from calibration.errors import CalibrationError
from daemon.cli import cmd_check_config
from daemon.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "daemon" / "defaults" / "example.toml"


def make_config(tmp_path: Path, updates: dict[str, Any] | None = None) -> Path:
    """The daemon's shipped example config in tmp_path, with ``updates`` applied (shared by the calibration tests)."""
    cfg = tmp_path / "etc" / "wastesort.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    if updates:
        apply_updates(cfg, updates)
        for b in cfg.parent.glob("wastesort.toml.bak-*"):
            b.unlink()
    return cfg


def read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def test_update_keeps_comments_and_other_keys_and_backs_up(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    result = apply_updates(
        cfg, {"belt.px_per_mm": 2.5, "belt.region": (10, 20, 300, 100), "gates.2.distance_mm": 1050.0}, now=now
    )
    assert result.written
    assert result.backup == cfg.with_name("wastesort.toml.bak-20260102T030405Z")
    assert result.backup.read_text() == before
    assert {c.key for c in result.changes} == {"belt.px_per_mm", "belt.region", "gates.2.distance_mm"}
    text = cfg.read_text()
    # Every comment of the example survives, and so does every untouched key.
    for line in before.splitlines():
        if line.lstrip().startswith("#"):
            assert line in text
    old, new = read_toml(result.backup), read_toml(cfg)
    assert new["belt"]["px_per_mm"] == 2.5 and new["belt"]["region"] == [10, 20, 300, 100]
    assert new["gates"]["2"]["distance_mm"] == 1050.0
    new["belt"]["px_per_mm"], new["belt"]["region"] = old["belt"]["px_per_mm"], old["belt"]["region"]
    new["gates"]["2"]["distance_mm"] = old["gates"]["2"]["distance_mm"]
    assert new == old
    assert load_settings(cfg).belt.px_per_mm == 2.5
    assert cmd_check_config(cfg) == 0
    assert "belt.px_per_mm: 1.0 -> 2.5" in describe(result)


def test_second_write_in_same_second_keeps_both_backups(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    first = apply_updates(cfg, {"belt.speed_mm_s": 250.0}, now=now)
    second = apply_updates(cfg, {"belt.speed_mm_s": 260.0}, now=now)
    assert first.backup != second.backup and first.backup.exists() and second.backup.exists()
    assert read_toml(second.backup)["belt"]["speed_mm_s"] == 250.0


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group needs root")
def test_owner_group_and_mode_are_kept(tmp_path: Path) -> None:
    """The installed config is root:wastesort 0640; a rewrite by root must not lock the service out."""
    cfg = make_config(tmp_path)
    os.chown(cfg, 0, 4321)
    cfg.chmod(0o640)
    apply_updates(cfg, {"belt.speed_mm_s": 250.0})
    st = cfg.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 4321, 0o640)


def test_unchanged_values_write_nothing(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    result = apply_updates(cfg, {"belt.speed_mm_s": 300.0})
    assert not result.written and result.changes == [] and result.backup is None
    assert list(cfg.parent.glob("*.bak-*")) == []


def test_result_failing_daemon_validation_is_refused_and_nothing_written(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    # 640 px region at 0.5 px/mm is 1280 mm long: gate 1 at 900 mm would be inside it.
    with pytest.raises(CalibrationError, match="gates.1.distance_mm"):
        apply_updates(cfg, {"belt.px_per_mm": 0.5})
    with pytest.raises(CalibrationError, match="speed_mm_s"):
        apply_updates(cfg, {"belt.speed_mm_s": 0.0})
    assert cfg.read_text() == before
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["wastesort.toml"]


def test_dry_run_reports_but_does_not_write(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    before = cfg.read_text()
    result = apply_updates(cfg, {"belt.speed_mm_s": 123.0}, dry_run=True)
    assert not result.written and [str(c) for c in result.changes] == ["belt.speed_mm_s: 300.0 -> 123.0"]
    assert cfg.read_text() == before
    assert "dry run" in describe(result)


def test_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="config file not found"):
        apply_updates(tmp_path / "nope.toml", {"belt.speed_mm_s": 1.0})


def test_new_gate_table_is_created(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    apply_updates(cfg, {"gates.5.distance_mm": 1700.0, "gates.5.lead_time_ms": 12.0})
    s = load_settings(cfg)
    assert s.gates[5].distance_mm == 1700.0 and s.gates[5].lead_time_ms == 12.0


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """Make real files/folders unwritable even for root (chattr +i); skip when the filesystem or user cannot."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make a file unwritable for root")
    done: list[Path] = []
    try:
        for p in paths:
            proc = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.skip(f"chattr +i not possible here ({proc.stderr.strip()}): needs CAP_LINUX_IMMUTABLE and ext4/xfs")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], check=True)


def test_immutable_config_is_a_one_line_refusal_leaving_nothing(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The path of a forgotten sudo: the config cannot be replaced. Exit 2, one line, no stray .bak or temp file."""
    cfg = make_config(tmp_path)
    before = cfg.read_bytes()
    with immutable(cfg):
        with pytest.raises(CalibrationError) as err:
            apply_updates(cfg, {"belt.speed_mm_s": 250.0})
        message = str(err.value)
        assert "\n" not in message and str(cfg) in message and "sudo" in message
        assert cfg.read_bytes() == before
        assert sorted(p.name for p in cfg.parent.iterdir()) == ["wastesort.toml"]
        code = main(["gates", "--config", str(cfg), "--distance", "1=950"])
        assert code == 2
        err_out = capsys.readouterr().err
        assert err_out.count("\n") == 1 and "cannot write" in err_out and "Traceback" not in err_out
        assert sorted(p.name for p in cfg.parent.iterdir()) == ["wastesort.toml"]


def test_unwritable_config_folder_refuses_but_dry_run_works(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A folder nobody may create files in: a real write is refused, a dry run needs no write access at all."""
    cfg = make_config(tmp_path)
    with immutable(cfg.parent):
        result = apply_updates(cfg, {"belt.speed_mm_s": 250.0}, dry_run=True)
        assert [str(c) for c in result.changes] == ["belt.speed_mm_s: 300.0 -> 250.0"]
        assert main(["gates", "--config", str(cfg), "--distance", "1=950", "--dry-run"]) == 0
        assert "would update" in capsys.readouterr().out
        with pytest.raises(CalibrationError, match=r"cannot write .*wastesort.toml: permission denied"):
            apply_updates(cfg, {"belt.speed_mm_s": 250.0})
        assert sorted(p.name for p in cfg.parent.iterdir()) == ["wastesort.toml"]
    assert load_settings(cfg).belt.speed_mm_s == 300.0


def test_symlinked_config_is_updated_through_the_link(tmp_path: Path) -> None:
    real = make_config(tmp_path)
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    result = apply_updates(link, {"belt.speed_mm_s": 250.0})
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert load_settings(real).belt.speed_mm_s == 250.0
    assert result.backup is not None and result.backup.parent == real.parent
    assert read_toml(result.backup)["belt"]["speed_mm_s"] == 300.0


def test_whole_numbers_stay_whole_and_new_tables_keep_a_blank_line(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    apply_updates(cfg, {"gates.1.distance_mm": 905.0, "gates.5.distance_mm": 1700.0, "belt.speed_mm_s": 250.0})
    text = cfg.read_text()
    assert "distance_mm = 905\n" in text and "905.0" not in text
    assert "speed_mm_s = 250.0" in text  # a float stays a float
    assert "distance_mm = 1700.0\n" in text  # a new key keeps the value's own type
    # The new table is followed by a blank line before the next table header.
    after = text.split("[gates.5]\n", 1)[1]
    body, _, rest = after.partition("\n\n")
    assert "[" not in body and rest.lstrip().startswith("[")


def test_failed_commit_removes_the_folders_it_made(tmp_path: Path) -> None:
    """An artefact in a new folder, then a config that cannot be replaced: the new folder goes again."""
    from calibration.commit import Artefact

    cfg = make_config(tmp_path)
    new_dir = tmp_path / "new" / "deeper"
    with immutable(cfg):
        with pytest.raises(CalibrationError, match="cannot write"):
            apply_updates(cfg, {"belt.speed_mm_s": 250.0}, artefacts=[Artefact(new_dir / "bg.png", b"png")])
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["wastesort.toml"]
