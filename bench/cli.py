"""`wastesort bench`: model latency, where its time goes, conv depth, attention scaling and pipeline throughput.

`wastesort bench all --write-docs` regenerates docs/benchmarks.md and docs/benchmarks.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from daemon.settings import ClassifySettings

from .timing import machine

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wastesort bench", description=__doc__)
    p.add_argument("what", nargs="*", default=["latency"], choices=["latency", "profile", "conv-depth", "scaling", "pipeline", "views", "all"])
    p.add_argument("--model", type=Path, default=None, help="student checkpoint (default: the shipped model)")
    p.add_argument("--backends", default="torch,onnx,onnx-int8")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=_positive_int, default=2, help="inference threads (torch and ONNX Runtime)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--items", type=int, default=30, help="items on the rendered belt (pipeline)")
    p.add_argument("--repeat", type=int, default=1, help="pipeline: also run the real-time mode this many times and report the spread")
    p.add_argument("--views", default="1,2,3,5", help="views: numbers of views per decision to compare")
    p.add_argument("--crop-padding", default=str(ClassifySettings.model_fields["crop_padding_px"].default),
                   help="views: crop paddings in px to compare (classify.crop_padding_px; default: the daemon's), e.g. 0,4,8")
    p.add_argument("--view-spacing-mm", type=float, default=40.0, help="views: belt travel between two views")
    p.add_argument("--max-view-wait-ms", type=float, default=1000.0, help="views: first full view to decision, at most")
    p.add_argument("--photos", type=Path, default=None,
                   help="views: the photos on the belt: an ImageFolder, or a split.json whose validation photos are used "
                        "(default: the 24 bundled samples); with --items 0, each photo once")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                   help="views: real time at 30 fps (default), or --no-realtime: as fast as possible, every frame processed")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md and docs/benchmarks.json")
    args = p.parse_args(argv)
    what = {"latency", "profile", "conv-depth", "scaling", "pipeline"} if "all" in args.what else set(args.what)
    result: dict[str, Any] = {"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        if "latency" in what:
            from .latency import run_latency

            result["latency"] = run_latency(
                str(args.model) if args.model else None,
                args.backends.split(","),
                [int(b) for b in args.batches.split(",")],
                args.warmup,
                args.runs,
                args.threads,
            )
        if "profile" in what:
            from .profile import run_profile

            result["profile"] = run_profile(str(args.model) if args.model else None, args.runs, args.threads)
        if "conv-depth" in what:
            from .conv_depth import run_conv_depth

            result["conv_depth"] = run_conv_depth([0, 1, 2, 4, 8, 32], args.warmup, max(10, args.runs // 2), args.threads)
        if "scaling" in what:
            from .scaling import run_scaling

            sizes = [(64, 48), (128, 96), (192, 144), (256, 192), (384, 288)]
            result["scaling"] = run_scaling(sizes, 2, 3, max(5, args.runs // 5), args.threads)
        if "pipeline" in what:
            from .pipeline import run_pipeline_bench

            backend = ClassifySettings.model_fields["backend"].default
            result["pipeline"] = run_pipeline_bench(args.items, args.model, backend)
            if args.repeat > 1:
                from .pipeline import run_pipeline_spread

                result["pipeline_spread"] = run_pipeline_spread(args.items, args.model, backend, args.repeat)
        if "views" in args.what:  # not part of "all": it is an experiment, several minutes of real-time runs
            from .views import run_views_bench

            result["views"] = run_views_bench(
                args.items, args.model, ClassifySettings.model_fields["backend"].default,
                [int(v) for v in args.views.split(",")], args.view_spacing_mm, args.max_view_wait_ms,
                realtime=args.realtime, paddings=[int(v) for v in args.crop_padding.split(",")], photos=args.photos,
            )
    except (FileNotFoundError, ValueError) as exc:
        print(f"wastesort bench: {exc}", file=sys.stderr)
        return 2
    if args.write_docs:
        from .report import render

        command = "wastesort bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        DOCS.mkdir(exist_ok=True)
        (DOCS / "benchmarks.json").write_text(json.dumps(result, indent=1))
        (DOCS / "benchmarks.md").write_text(render(result, command))
    if args.json:
        print(json.dumps(result))
    else:
        from .report import render

        print(render(result, "wastesort bench " + " ".join(argv if argv is not None else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
