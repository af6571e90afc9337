"""The inference API the daemon and the benchmarks use: `load_classifier(...).predict(images)`.

Two backends share preprocessing and post-processing: eager PyTorch and
ONNX Runtime (the student is exported in memory at load time, or read from an
exported .onnx file). Probabilities are temperature-calibrated with the
temperature stored in the checkpoint.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import StudentCheckpoint, load_checkpoint
from .descriptor import FEATURES_IMAGENET, ImageNetDescriptor, descriptor_for, feature_source
from .preprocess import PreprocessConfig, preprocess_bgr
from .student import DistilledViT, inference_logits
from .unknown import prepare_params, softmax, unknown_scores

DEFAULT_MODEL_PATH = Path(__file__).parent / "weights" / "default.pt"
Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS = ("torch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float  # calibrated probability of `label`
    scores: dict[str, float]  # calibrated per-class probabilities
    unknown: float  # in [0, 1]; higher = more likely an item of no trained class


class InferenceNet(nn.Module):
    """What is exported and run: image batch -> (averaged logits, the unknown-item scorer's
    features). Those are the class token's, or with a `descriptor` (model/descriptor.py) the
    ImageNet description computed from the output of the stem's frozen part, which the student's
    tuned stem stages (if any) continue too."""

    def __init__(self, student: DistilledViT, descriptor: ImageNetDescriptor | None = None) -> None:
        super().__init__()
        self.student = student.eval()
        self.descriptor = descriptor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.descriptor is None:
            cls_feat, dist_feat = self.student.forward_features(x)
            feat = cls_feat
        else:
            frozen = self.student.patch_embed.frozen_features(x)
            cls_feat, dist_feat = self.student.features_from_stem(frozen)
            feat = self.descriptor(frozen)
        logits = inference_logits((self.student.head(cls_feat), self.student.head_dist(dist_feat)))
        return logits, feat


def inference_net(ckpt: StudentCheckpoint) -> InferenceNet:
    """The network a checkpoint runs: with the ImageNet descriptor when its unknown-item scorer
    reads it (the descriptor's weights come from the Lite package, not the checkpoint)."""
    model = ckpt.build_model()
    if feature_source(ckpt.unknown) == FEATURES_IMAGENET:
        return InferenceNet(model, descriptor_for(model.cfg, (ckpt.unknown or {}).get("descriptor_blocks")))
    return InferenceNet(model)


class _Runner(Protocol):
    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class TorchRunner:
    def __init__(self, net: InferenceNet) -> None:
        self.net = net.eval()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits, feat = self.net(torch.from_numpy(batch))
        return logits.numpy(), feat.numpy()


def export_onnx_bytes(net: InferenceNet, preprocess: PreprocessConfig, opset: int = 17) -> bytes:
    """Export the inference network to ONNX (dynamic batch) and return the serialised model."""
    buf = io.BytesIO()
    dummy = torch.zeros(1, 3, preprocess.height, preprocess.width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the (static) input-size check
        torch.onnx.export(
            net,
            (dummy,),
            buf,
            dynamo=False,
            input_names=["input"],
            output_names=["logits", "features"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            opset_version=opset,
        )
    return buf.getvalue()


# The first encoder block's query/key/value projection reads the embedding sum before any
# LayerNorm (patch projection + positions + the two tokens): its activations span a wide range, and
# one per-tensor uint8 scale for them moved 1-4 of the 302 validation decisions of every student
# measured (docs/results.md, "The int8 export now decides as float"). It stays float; the rest is int8.
FLOAT_MATMULS = ("/blocks.0/attn/qkv/",)
QUANTISED_OPS = ["MatMul", "Gemm"]  # the Linear layers; convolutions stay float


def float_matmul_nodes(onnx_model: bytes) -> list[str]:
    """The QUANTISED_OPS nodes the int8 export leaves in float (FLOAT_MATMULS)."""
    import onnx

    graph = onnx.load_from_string(onnx_model).graph
    return [n.name for n in graph.node if n.op_type in QUANTISED_OPS and n.name.startswith(FLOAT_MATMULS)]


def quantize_onnx_int8(onnx_model: bytes) -> bytes:
    """Dynamic int8 quantisation of the Linear (MatMul) weights with ONNX Runtime's quantiser,
    all but the wide-range first projection (FLOAT_MATMULS)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    root.addFilter(_drop_preprocessing_advice)  # the quantiser's advice is for static quantisation; it
    try:  # would otherwise be a WARNING in the daemon's log at every start
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(onnx_model)
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTISED_OPS, nodes_to_exclude=float_matmul_nodes(onnx_model))
            return dst.read_bytes()
    finally:
        root.removeFilter(_drop_preprocessing_advice)


def _drop_preprocessing_advice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Please consider to run pre-processing before quantization")


class OnnxRunner:
    def __init__(self, onnx_model: bytes | str, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(onnx_model, sess_options=opts, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, feat = self.session.run(["logits", "features"], {"input": batch})
        return logits, feat


class Classifier:
    """A loaded student: `predict(list of BGR uint8 images) -> list[Prediction]`."""

    def __init__(self, ckpt: StudentCheckpoint, runner: _Runner, backend: str) -> None:
        self.checkpoint = ckpt
        self.class_names = list(ckpt.class_names)
        self.preprocess = ckpt.preprocess
        self.backend = backend
        self._runner = runner
        self._unknown = prepare_params(ckpt.unknown)

    def logits_and_features(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self._runner(preprocess_bgr(images, self.preprocess))

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        if len(images) == 0:
            return []
        logits, feats = self.logits_and_features(images)
        probs = softmax(logits, self.checkpoint.temperature)
        unknown = unknown_scores(logits, feats, self._unknown, self.checkpoint.temperature)
        out = []
        for p, u in zip(probs, unknown):
            i = int(p.argmax())
            out.append(
                Prediction(
                    label=self.class_names[i],
                    confidence=float(p[i]),
                    scores={c: float(v) for c, v in zip(self.class_names, p)},
                    unknown=float(np.clip(u, 0.0, 1.0)),
                )
            )
        return out


ONNX_META_KEY = "wastesort_checkpoint"


def one_blas_thread() -> None:
    """Limit numpy's BLAS to one thread in this process. A Classifier scores one item at a time:
    the unknown-item distance is a (1, 320) x (320, 320) product, too small to share, and a BLAS
    thread pool left spinning after it took the cores from ONNX Runtime's threads (2 threads on 2
    cores: 8-15 ms per item instead of 3.3; docs/results.md, "Speed")."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def load_classifier(path: str | Path | None = None, backend: Backend = "torch", threads: int | None = None) -> Classifier:
    """Load a checkpoint (default: the shipped model) with the torch, onnx or onnx-int8 backend.

    `path` may also be an .onnx file written by `wastesort-train export`, which
    carries the checkpoint's metadata; it then needs the onnx backend. Like the thread count
    (`threads`, torch's or ONNX Runtime's), numpy's BLAS threads are set for the process: one.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not path.is_file():
        hint = " (the shipped model is missing: train one with wastesort-train)" if path == DEFAULT_MODEL_PATH else ""
        raise FileNotFoundError(f"model file not found: {path}{hint}")
    if threads is None:
        threads = int(os.environ.get("WASTESORT_THREADS", "0")) or None
    one_blas_thread()
    if path.suffix == ".onnx":
        if backend != "onnx":
            raise ValueError(f"{path} is an ONNX file: use backend='onnx'")
        ckpt = read_onnx_metadata(path)
        return Classifier(ckpt, OnnxRunner(str(path), threads), "onnx")
    ckpt = load_checkpoint(path)
    net = inference_net(ckpt)
    if backend == "torch":
        if threads:
            torch.set_num_threads(threads)
        return Classifier(ckpt, TorchRunner(net), "torch")
    onnx_model = export_onnx_bytes(net, ckpt.preprocess)
    if backend == "onnx-int8":
        onnx_model = quantize_onnx_int8(onnx_model)
    return Classifier(ckpt, OnnxRunner(onnx_model, threads), backend)


def onnx_metadata(ckpt: StudentCheckpoint) -> str:
    return json.dumps(
        {
            "config": ckpt.config.to_dict(),
            "class_names": ckpt.class_names,
            "preprocess": ckpt.preprocess.to_dict(),
            "temperature": ckpt.temperature,
            "unknown": ckpt.unknown,
            "meta": ckpt.meta,
        }
    )


def read_onnx_metadata(path: Path) -> StudentCheckpoint:
    import onnx

    from .config import StudentConfig

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_META_KEY not in props:
        raise ValueError(f"{path} has no wastesort metadata: export it with `wastesort-train export`")
    d = json.loads(props[ONNX_META_KEY])
    return StudentCheckpoint(
        config=StudentConfig.from_dict(d["config"]),
        state_dict={},
        class_names=d["class_names"],
        preprocess=PreprocessConfig.from_dict(d["preprocess"]),
        temperature=float(d["temperature"]),
        unknown=d.get("unknown"),
        meta=d.get("meta", {}),
    )


def export_onnx_file(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Write a self-contained .onnx (network + wastesort metadata) for a checkpoint."""
    import onnx

    ckpt = load_checkpoint(checkpoint_path)
    raw = export_onnx_bytes(inference_net(ckpt), ckpt.preprocess)
    model = onnx.load_from_string(raw)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, onnx_metadata(ckpt)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path
