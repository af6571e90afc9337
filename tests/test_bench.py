"""The benchmark command runs end to end and reports what the docs quote (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main as bench_main
from bench.report import render


def test_latency_benchmark_reports_every_model(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench_main(["latency", "--model", str(tiny_checkpoint), "--backends", "torch,onnx", "--batches", "1", "--runs", "1", "--warmup", "0", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in result["latency"]]
    assert names == ["student/torch", "student/onnx", "resnet50@224x224", "resnet50@24x32", "mobilenet_v3_small@24x32", "efficientnet_lite0/onnx@256x192"]
    assert all(r["median_ms"] > 0 and r["p95_ms"] >= r["median_ms"] - 1e-9 and r["peak_rss_mb"] > 0 for r in result["latency"])
    md = render(result, "wastesort bench latency")
    assert "ResNet-50 @224×224" in md and "MobileNetV3-small" in md and "EfficientNet-Lite0 in ONNX Runtime" in md


def test_latency_models_are_timed_in_alternation_and_the_ratios_per_round(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every model gets one median per round; the rendered ratios are the per-round ratios' median and range."""
    rc = bench_main(["latency", "--model", str(tiny_checkpoint), "--backends", "onnx", "--batches", "1", "--runs", "3", "--warmup", "0", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert all(len(r["extra"]["round_medians_ms"]) == 3 and r["runs"] == 3 for r in result["latency"])
    md = render(result, "wastesort bench latency")
    assert "timed in alternation, 3 rounds" in md and "round_medians_ms" not in md

    def entry(name: str, rounds: list[float]) -> dict:
        return {"name": name, "median_ms": float(np.median(rounds)), "p95_ms": max(rounds), "runs": len(rounds), "peak_rss_mb": 1.0,
                "extra": {"batch": 1, "round_medians_ms": rounds}}

    # the machine halves its speed in the second round: per round the student is 0.5x and 0.6x of Lite0
    made_up = {**result, "latency": [entry("student/onnx", [1.0, 2.4]), entry("efficientnet_lite0/onnx@256x192", [2.0, 4.0])]}
    assert "EfficientNet-Lite0 in ONNX Runtime @256×192: 0.55× (0.50×–0.60×) (target ≤ 1)" in render(made_up, "x")


def test_a_model_that_fails_to_load_stops_the_latency_benchmark(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["latency", "--model", str(tiny_checkpoint), "--backends", "tensorrt", "--batches", "1", "--runs", "1"]) == 2
    assert "backend must be one of" in capsys.readouterr().err


def test_bench_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["latency", "--model", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_bench_refuses_zero_threads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["latency", "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads: must be at least 1" in capsys.readouterr().err


def test_profile_benchmark_names_the_operators_that_take_the_time(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["profile", "--model", str(tiny_checkpoint), "--runs", "3", "--json"]) == 0
    prof = json.loads(capsys.readouterr().out)["profile"]
    ops = [r["op"] for r in prof["top"]]
    assert "aten::addmm" in ops or "aten::linear" in ops  # the projections are in there
    shares = [r["share"] for r in prof["top"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0 + 1e-6
    assert prof["total_ms_per_item"] > 0
    md = render({"machine": {"cpu": "x", "cores": 2, "torch": "t", "torch_threads": 2, "python": "p"}, "date": "d", "profile": prof}, "wastesort bench profile")
    assert "Where the student's time goes" in md and f"`{ops[0]}`" in md


def test_pipeline_repeat_reports_the_spread_of_the_timing_figures(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["pipeline", "--model", str(tiny_checkpoint), "--items", "2", "--repeat", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    spread = result["pipeline_spread"]
    assert spread["runs"] == 2 and spread["mode"] == "realtime-30fps"
    fire = spread["fire_error_p99_ms"]
    assert len(fire["values"]) == 2 and fire["min"] <= fire["median"] <= fire["max"]
    md = render(result, "wastesort bench pipeline --repeat 2")
    assert "Spread over 2 real-time runs" in md and "| fire_error_p99_ms |" in md


def test_views_benchmark_reports_accuracy_and_latency_per_number_of_views(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["views", "--model", str(tiny_checkpoint), "--items", "2", "--views", "1,3", "--crop-padding", "0,8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["views"]
    assert [(r["views"], r["crop_padding_px"]) for r in result["runs"]] == [(1, 0), (3, 0), (1, 8), (3, 8)]
    assert all(0 <= r["rejected"] <= r["items"] for r in result["runs"])
    assert all(r["items"] == 2 and 0 <= r["accuracy"] <= 1 and r["latency_p99_ms"] > 0 for r in result["runs"])
    assert result["direct"]["photos"] >= 6 and 0 <= result["direct"]["accuracy"] <= 1
    md = render({"machine": {"cpu": "x", "cores": 2, "torch": "t", "torch_threads": 2, "python": "p"}, "date": "d", "views": result}, "wastesort bench views")
    assert "Belt accuracy against views per decision" in md and "| 3 | 0 | 2 |" in md and "| 3 | 8 | 2 |" in md


def test_views_benchmark_puts_a_splits_validation_photos_on_the_belt(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--photos split.json: each validation photo once (--items 0), the direct figure on the same photos."""
    from daemon.conveyor_sim import SAMPLES_DIR

    names = sorted(d.name for d in SAMPLES_DIR.iterdir() if d.is_dir())
    val = [[f"{name}/{p.name}", i] for i, name in enumerate(names[:3]) for p in sorted((SAMPLES_DIR / name).iterdir())[:1]]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"root": str(SAMPLES_DIR), "class_names": names, "train": [], "val": val}))
    args = ["views", "--model", str(tiny_checkpoint), "--items", "0", "--views", "1", "--no-realtime", "--json"]
    assert bench_main([*args, "--photos", str(split)]) == 0
    result = json.loads(capsys.readouterr().out)["views"]
    assert result["direct"]["photos"] == 3 and result["photos"] == str(split) and result["mode"] == "as-fast-as-possible"
    assert result["runs"][0]["items"] == 3  # every photo crossed the belt once and was decided once
    split.write_text(json.dumps({"root": str(tmp_path), "class_names": names, "train": [], "val": val}))
    assert bench_main([*args, "--photos", str(split)]) == 2  # photos that are not there: a clear error, no run
    assert "missing" in capsys.readouterr().err
    split.write_text("{}")
    assert bench_main([*args, "--photos", str(split)]) == 2
