"""Reports are a site's record: one file per run, never replaced; a dry run leaves none (or one marked so)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from calibration.cli import main
from calibration.report import default_report_path, save_report
from test_calibration_config import REPO, make_config


def test_reports_in_the_same_instant_never_replace_each_other(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    now = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone.utc)
    first = save_report(default_report_path(cfg, "belt", now), "belt", {"speed": 1}, [])
    second = save_report(default_report_path(cfg, "belt", now), "belt", {"speed": 2}, [])
    assert first is not None and second is not None and first != second
    assert json.loads(first.read_text())["result"] == {"speed": 1}
    assert json.loads(second.read_text())["result"] == {"speed": 2}


def test_dry_run_does_not_replace_the_record_of_a_real_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    reports = cfg.parent / "calibration-reports"
    assert main(["gates", "--config", str(cfg), "--distance", "1=950"]) == 0
    assert main(["gates", "--config", str(cfg), "--distance", "1=990", "--dry-run"]) == 0
    assert main(["gates", "--config", str(cfg), "--distance", "1=980"]) == 0
    saved = sorted(reports.iterdir())
    assert len(saved) == 2  # the two real writes, each in its own file; the dry run wrote none
    news = sorted(json.loads(p.read_text())["config_changes"][0]["new"] for p in saved)
    assert news == [950, 980]
    assert "dry run: no report saved" in capsys.readouterr().out
    explicit = tmp_path / "dry.json"
    assert main(["gates", "--config", str(cfg), "--distance", "1=990", "--dry-run", "--report", str(explicit)]) == 0
    assert json.loads(explicit.read_text())["dry_run"] is True


def test_library_chatter_stays_off_the_technicians_output(tmp_path: Path) -> None:
    """An unreadable video: one error line on stderr, no FFmpeg/OpenCV warnings, nothing on stdout."""
    bad = tmp_path / "belt.mp4"
    bad.write_bytes(b"not a video" * 100)
    cfg = make_config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "daemon", "calibrate", "belt", "--config", str(cfg),
                           "--video", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: cannot open video"), proc.stderr


def test_logging_of_the_calling_process_is_restored(tmp_path: Path) -> None:
    """main() quietens structlog and OpenCV only while it runs: the daemon's (or a test's) logging stays intact."""
    import cv2
    import structlog

    before = structlog.get_config()
    cv_before = cv2.utils.logging.getLogLevel()
    cfg = make_config(tmp_path)
    assert main(["gates", "--config", str(cfg), "--distance", "1=950"]) == 0
    assert structlog.get_config() == before and cv2.utils.logging.getLogLevel() == cv_before
