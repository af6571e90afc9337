"""The training shell scripts: they parse, and the ablation script refuses a row it does not know
before it trains anything (a typo must not cost a 15-minute run of the wrong row)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ablation_script_refuses_an_unknown_row(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "ablation-cached.sh"), str(tmp_path), "no-distil"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown row no-distil" in done.stderr
    assert not (ROOT / "runs" / "abl_no-distil").exists()


def test_ablation_script_needs_a_cache_run() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "ablation-cached.sh")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "usage" in done.stderr
