"""Per-item latency of the student (each backend, preprocessing included) against ResNet-50
(the patent's teacher), a MobileNetV3-small and EfficientNet-Lite0 in ONNX Runtime at the
photos' 256x192 (the fine-tuned CNN a user would otherwise pick), all in one process run so
the ratios hold.

Each model runs in its own child process (spawned one after another), so that its peak
memory is its own; every timing includes the same preprocessing (`model.preprocess`).
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .timing import stats

SAMPLES = Path(__file__).resolve().parent.parent / "daemon" / "samples"


def sample_images(n: int) -> list[np.ndarray]:
    files = sorted(SAMPLES.rglob("*.jpg"))
    if files:
        return [cv2.imread(str(files[i % len(files)])) for i in range(n)]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (256, 192, 3), np.uint8) for _ in range(n)]


def _student(model_path: str | None, backend: str, batch: int, warmup: int, runs: int, threads: int) -> dict[str, Any]:
    import torch

    from model import load_classifier

    torch.set_num_threads(threads)
    clf = load_classifier(model_path, backend, threads=threads)  # type: ignore[arg-type]
    imgs = sample_images(batch)
    ms = time_call_per_item(lambda: clf.predict(imgs), warmup, runs, batch)
    size = Path(model_path).stat().st_size if model_path else None
    return stats(f"student/{backend}", ms, batch=batch, file_bytes=size, input=f"{clf.preprocess.height}x{clf.preprocess.width}").to_dict()


def time_call_per_item(fn: Any, warmup: int, runs: int, batch: int) -> np.ndarray:
    from .timing import time_call

    return time_call(fn, warmup, runs) / batch


def _torchvision(kind: str, height: int, width: int, batch: int, warmup: int, runs: int, threads: int, num_classes: int) -> dict[str, Any]:
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

    ms = time_call_per_item(run, warmup, runs, batch)
    params = sum(p.numel() for p in net.parameters())
    return stats(f"{kind}@{height}x{width}", ms, batch=batch, params=params).to_dict()


def _lite_onnx(variant: str, height: int, width: int, batch: int, warmup: int, runs: int, threads: int, num_classes: int) -> dict[str, Any]:
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
    ms = time_call_per_item(lambda: runner(preprocess_bgr(imgs, pre)), warmup, runs, batch)
    return stats(f"{variant}/onnx@{height}x{width}", ms, batch=batch, params=sum(p.numel() for p in net.parameters())).to_dict()


def _in_child(fn: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def run_latency(model_path: str | None, backends: list[str], batches: list[int], warmup: int, runs: int, threads: int) -> list[dict[str, Any]]:
    from model.checkpoint import load_checkpoint
    from model.inference import DEFAULT_MODEL_PATH

    ck = load_checkpoint(model_path or DEFAULT_MODEL_PATH)
    h, w = ck.preprocess.height, ck.preprocess.width
    k = len(ck.class_names)
    path = str(model_path or DEFAULT_MODEL_PATH)
    results = []
    for batch in batches:
        for backend in backends:
            results.append(_in_child(_student, path, backend, batch, warmup, runs, threads))
        results.append(_in_child(_torchvision, "resnet50", 224, 224, batch, warmup, runs, threads, k))
        results.append(_in_child(_torchvision, "resnet50", h, w, batch, warmup, runs, threads, k))
        results.append(_in_child(_torchvision, "mobilenet_v3_small", h, w, batch, warmup, runs, threads, k))
        results.append(_in_child(_lite_onnx, "efficientnet_lite0", 256, 192, batch, warmup, runs, threads, k))
    return results
