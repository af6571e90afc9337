"""Where a student's time goes in ONNX Runtime (the daemon's backend), by part of the network.

torch.profiler (`wastesort bench profile`) names operators of the eager model; what the line runs
is ONNX Runtime's fused graph, and the question that decides a speed-up is which *part* costs:
the CNN stem's stages, the unknown-item descriptor (model/descriptor.py), the transformer blocks
or the rest (projection, heads, glue). This runs ONNX Runtime's own profiler on the exported
network, batch 1, and sums each node's kernel time by the module it came from. Prints one JSON
object: microseconds per run by part and by operator type.

    .venv/bin/python scripts/onnx_profile.py [--model model/weights/default.pt] [--backend onnx-int8] [--runs 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import tempfile
from pathlib import Path

import numpy as np

from model.checkpoint import load_checkpoint
from model.inference import DEFAULT_MODEL_PATH, export_onnx_bytes, inference_net, quantize_onnx_int8

STEM_BLOCK = re.compile(r"^/(?:student/patch_embed/cnn/)?blocks\.(\d+)/blocks\.\d+\.\d+/")  # a stem stage's inverted-residual block
ENCODER_BLOCK = re.compile(r"^/(?:student/)?blocks\.\d+/")  # the rest of /blocks.N/: an encoder block (attention, feed-forward, norms, residuals)


def part_of(node: str) -> str:
    """The network part an ONNX node name (the exporter's module path, ORT's fused-node suffix) belongs to."""
    if "/descriptor/" in node:
        return "descriptor"
    match = STEM_BLOCK.match(node)
    if match:
        return f"stem stage {int(match.group(1)) + 1}"
    if ENCODER_BLOCK.match(node):
        return "transformer"
    if node.startswith(("/conv_stem", "/bn1", "/student/patch_embed/cnn/conv_stem", "/student/patch_embed/cnn/bn1")):
        return "stem convolution"
    return "other"


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    p.add_argument("--backend", choices=("onnx", "onnx-int8"), default="onnx-int8")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    ckpt = load_checkpoint(args.model)
    graph = export_onnx_bytes(inference_net(ckpt), ckpt.preprocess)
    if args.backend == "onnx-int8":
        graph = quantize_onnx_int8(graph)
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = args.threads
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 3, ckpt.preprocess.height, ckpt.preprocess.width), dtype=np.float32)
        for _ in range(args.runs):
            session.run(None, {"input": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sum(1 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    by_part: collections.Counter[str] = collections.Counter()
    by_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        by_part[part_of(e["name"])] += e["dur"]
        by_op[e["args"].get("op_name", "?")] += e["dur"]
    total = sum(by_part.values())
    print(json.dumps({
        "model": str(args.model), "backend": args.backend, "threads": args.threads, "runs": runs,
        "kernel_us_per_run": round(total / runs, 1),
        "by_part_us": {k: round(v / runs, 1) for k, v in sorted(by_part.items())},
        "by_part_share": {k: round(v / total, 3) for k, v in sorted(by_part.items())},
        "by_op_us": {k: round(v / runs, 1) for k, v in by_op.most_common(12)},
    }, indent=1))


if __name__ == "__main__":
    main()
