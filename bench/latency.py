"""Per-item latency of the student (each backend, preprocessing included) against ResNet-50
(the patent's teacher), a MobileNetV3-small and EfficientNet-Lite0 in ONNX Runtime at the
photos' 256x192 (the fine-tuned CNN a user would otherwise pick), all in one process run so
the ratios hold.

Each model is loaded in its own child process, so that its peak memory is its own, and all the
models of one batch size are timed in alternation: MAX_ROUNDS rounds (fewer when `runs` is
smaller), in each of which every model makes its share of the timed calls in turn (after ROUND_WARMUP untimed ones). A shared machine
whose speed drifts during the run (seen here: ResNet-50 from 37 to 97 ms between runs) then slows
every model alike, so the ratios issue 19 sets compare like with like. Each round's median is
kept, and the report gives the spread of the per-round ratios as well as their median.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .timing import LatencyStats, peak_rss_mb, time_call

SAMPLES = Path(__file__).resolve().parent.parent / "daemon" / "samples"
ROUND_WARMUP = 2  # untimed calls at the start of every round: caches and thread pools after another model ran
MAX_ROUNDS = 10

Step = Callable[[], object]


def sample_images(n: int) -> list[np.ndarray]:
    files = sorted(SAMPLES.rglob("*.jpg"))
    if files:
        return [cv2.imread(str(files[i % len(files)])) for i in range(n)]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (256, 192, 3), np.uint8) for _ in range(n)]


def time_call_per_item(fn: Any, warmup: int, runs: int, batch: int) -> np.ndarray:
    return time_call(fn, warmup, runs) / batch


def _student(model_path: str, backend: str, batch: int, threads: int) -> tuple[Step, dict[str, Any]]:
    import torch

    from model import load_classifier

    torch.set_num_threads(threads)
    clf = load_classifier(model_path, backend, threads=threads)  # type: ignore[arg-type]
    imgs = sample_images(batch)
    extra = {"file_bytes": Path(model_path).stat().st_size, "input": f"{clf.preprocess.height}x{clf.preprocess.width}"}
    return (lambda: clf.predict(imgs)), extra


def _torchvision(kind: str, height: int, width: int, batch: int, threads: int, num_classes: int) -> tuple[Step, dict[str, Any]]:
    import torch
    from torchvision.models import mobilenet_v3_small, resnet50

    from model.preprocess import PreprocessConfig, preprocess_bgr

    torch.set_num_threads(threads)
    net = (resnet50 if kind == "resnet50" else mobilenet_v3_small)(num_classes=num_classes).eval()
    pre = PreprocessConfig(height=height, width=width)
    imgs = sample_images(batch)

    def run() -> None:
        with torch.inference_mode():
            net(torch.from_numpy(preprocess_bgr(imgs, pre)))

    return run, {"params": sum(p.numel() for p in net.parameters())}


def _lite_onnx(variant: str, height: int, width: int, batch: int, threads: int, num_classes: int) -> tuple[Step, dict[str, Any]]:
    """A fine-tuned-size EfficientNet-Lite in ONNX Runtime (fp32): the model a user would pick instead."""
    import torch

    from model.efficientnet_lite import LITE_MEAN, LITE_STD, build_lite
    from model.inference import OnnxRunner, export_onnx_bytes
    from model.preprocess import PreprocessConfig, preprocess_bgr

    class TwoOutputs(torch.nn.Module):  # the exporter names two outputs (logits, features)
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.net(x)
            return y, y

    torch.set_num_threads(threads)
    net = build_lite(variant, num_classes, pretrained=False).eval()
    pre = PreprocessConfig(height=height, width=width, mean=LITE_MEAN, std=LITE_STD)
    runner = OnnxRunner(export_onnx_bytes(TwoOutputs(net), pre), threads)
    imgs = sample_images(batch)
    return (lambda: runner(preprocess_bgr(imgs, pre))), {"params": sum(p.numel() for p in net.parameters())}


def _serve(conn: Connection, build: Callable[..., tuple[Step, dict[str, Any]]], args: tuple[Any, ...], batch: int) -> None:
    """Child process: build one model, then time it whenever the parent asks, until told to stop."""
    try:
        step, extra = build(*args)
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it
        conn.send(("error", exc))
        return
    conn.send(("ready", extra))
    while (request := conn.recv()) is not None:
        warmup, runs = request
        conn.send(time_call_per_item(step, warmup, runs, batch))
    conn.send(peak_rss_mb())


class _TimedModel:
    """The parent's end of one model's child process: its timings, round by round."""

    def __init__(self, ctx: Any, name: str, build: Callable[..., tuple[Step, dict[str, Any]]], args: tuple[Any, ...], batch: int) -> None:
        self.name, self.batch = name, batch
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, build, args, batch), daemon=True)
        self._proc.start()
        status, payload = self._conn.recv()
        if status == "error":
            self._proc.join()
            raise payload
        self.extra: dict[str, Any] = payload
        self.rounds: list[np.ndarray] = []

    def time(self, warmup: int, runs: int) -> None:
        self._conn.send((warmup, runs))
        self.rounds.append(self._conn.recv())

    def finish(self) -> dict[str, Any]:
        self._conn.send(None)
        rss = float(self._conn.recv())
        self._proc.join()
        ms = np.concatenate(self.rounds)
        extra = {"batch": self.batch, **self.extra, "round_medians_ms": [round(float(np.median(r)), 3) for r in self.rounds]}
        return LatencyStats(self.name, float(np.median(ms)), float(np.percentile(ms, 95)), len(ms), rss, extra).to_dict()

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


def time_in_alternation(models: list[tuple[str, Callable[..., tuple[Step, dict[str, Any]]], tuple[Any, ...]]], batch: int,
                        warmup: int, runs: int) -> list[dict[str, Any]]:
    """Load every model in its own child, then time them round by round, each in turn (see the module doc)."""
    ctx = mp.get_context("spawn")
    rounds = max(1, min(MAX_ROUNDS, runs))
    per_round = math.ceil(runs / rounds)
    timed: list[_TimedModel] = []
    try:
        for name, build, args in models:
            timed.append(_TimedModel(ctx, name, build, args, batch))
        for r in range(rounds):
            for m in timed:
                m.time(warmup if r == 0 else ROUND_WARMUP, per_round)
        return [m.finish() for m in timed]
    finally:
        for m in timed:
            m.stop()


def run_latency(model_path: str | None, backends: list[str], batches: list[int], warmup: int, runs: int, threads: int) -> list[dict[str, Any]]:
    from model.checkpoint import load_checkpoint
    from model.inference import DEFAULT_MODEL_PATH

    ck = load_checkpoint(model_path or DEFAULT_MODEL_PATH)
    h, w = ck.preprocess.height, ck.preprocess.width
    k = len(ck.class_names)
    path = str(model_path or DEFAULT_MODEL_PATH)
    results = []
    for batch in batches:
        models: list[tuple[str, Callable[..., tuple[Step, dict[str, Any]]], tuple[Any, ...]]] = [
            (f"student/{backend}", _student, (path, backend, batch, threads)) for backend in backends
        ]
        models += [
            ("resnet50@224x224", _torchvision, ("resnet50", 224, 224, batch, threads, k)),
            (f"resnet50@{h}x{w}", _torchvision, ("resnet50", h, w, batch, threads, k)),
            (f"mobilenet_v3_small@{h}x{w}", _torchvision, ("mobilenet_v3_small", h, w, batch, threads, k)),
            ("efficientnet_lite0/onnx@256x192", _lite_onnx, ("efficientnet_lite0", 256, 192, batch, threads, k)),
        ]
        results += time_in_alternation(models, batch, warmup, runs)
    return results
