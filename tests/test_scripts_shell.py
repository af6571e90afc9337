"""The training shell scripts: they parse, and the ablation script refuses a row it does not know
before it trains anything (a typo must not cost a 15-minute run of the wrong row)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("rows", [["no-distil"], ["global", "no-distil"]], ids=["alone", "behind a valid row"])
def test_ablation_script_refuses_an_unknown_row(tmp_path: Path, rows: list[str]) -> None:
    """Every row is checked before the first one trains: a typo behind a valid row fails at once,
    with nothing created for the valid row either. The script runs from a copy, so the runs/ it
    would write to is the copy's."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "ablation-cached.sh"
    shutil.copy(ROOT / "scripts" / "ablation-cached.sh", script)
    done = subprocess.run(["bash", str(script), str(tmp_path / "cache"), *rows], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown row no-distil" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_ablation_script_needs_a_cache_run() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "ablation-cached.sh")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "usage" in done.stderr


@pytest.mark.parametrize("shares", [["0.5", "1.5"], ["abc"], ["0"], ["1"], ["0.00"]])
def test_learning_curve_refuses_a_share_outside_0_1_before_training(tmp_path: Path, shares: list[str]) -> None:
    """A bad share anywhere in the list fails at once, before the first (valid) point cuts its
    subset or trains: the script runs from a copy, so nothing may appear under the copy's runs/."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "learning-curve.sh"
    shutil.copy(ROOT / "scripts" / "learning-curve.sh", script)
    done = subprocess.run(["bash", str(script), str(tmp_path / "cache"), *shares], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"share {shares[-1]} is not a number strictly between 0 and 1" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_learning_curve_needs_a_share() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "learning-curve.sh"), "runs/s0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage" in done.stderr


def test_ablation_script_takes_a_run_folder_for_one_row_only(tmp_path: Path) -> None:
    """RUN (how scripts/learning-curve.sh trains its points) names one row's folder: with two rows
    they would train into the same folder, so that is refused before anything is created."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "ablation-cached.sh"
    shutil.copy(ROOT / "scripts" / "ablation-cached.sh", script)
    env = {"PATH": "/usr/bin:/bin", "RUN": str(tmp_path / "runs" / "lc50")}
    done = subprocess.run(["bash", str(script), str(tmp_path / "cache"), "full", "mlp"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "RUN names the run folder of one row; 2 rows given" in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("seed", ["abc", "-1", "1.5"])
def test_train_default_refuses_a_bad_seed_before_it_creates_the_run(tmp_path: Path, seed: str) -> None:
    """SEED reaches `distill --seed` only after the teacher and the caches (an hour on 2 cores), so a
    bad one is refused first, with the run folder not even created."""
    run = tmp_path / "run"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "train-default.sh"), str(run)], env={"SEED": seed, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"SEED must be a non-negative integer, got '{seed}'" in done.stderr
    assert not run.exists()
