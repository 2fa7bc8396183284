"""Wall seconds to export a large build's Gantt chart in each format (prints a table; not a test).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_gantt.py          # ResNet-50 on multi-npu
    python tools/bench_gantt.py --model vgg19 --target edge-soc --repeat 5

The build is HEFT's, tiled as ``hetc build`` tiles (thousands of tasks). Each format is exported ``--repeat``
times into a temporary directory; printed: the timeline's slices, and per format the median and range of the
wall seconds and the file's size. docs/gantt.md's claim: thousands of tasks render in about a second.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_schedule import chosen_models  # noqa: E402  (the light models and models/*.onnx)


def main(argv: list[str] | None = None) -> int:
    from hetc.pipeline import BuildOptions, build
    from hetc.report import GANTT_FORMATS, Timeline, export_gantt

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--target", default="multi-npu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    path = chosen_models(parser, args.model)[args.model]
    result = build(str(path), BuildOptions(target=args.target, scheduler="heft"))
    timeline = Timeline.from_schedule(result.schedule, result.graph, result.plan, result.target)
    print(f"{args.model} on {args.target}: {len(result.schedule.tasks):,} tasks, {len(timeline.slices):,} slices")
    print(f"{'format':10s} {'median s':>9s} {'range s':>15s} {'KiB':>9s}")
    with tempfile.TemporaryDirectory() as directory:
        for fmt in GANTT_FORMATS:
            seconds = []
            for k in range(args.repeat):
                began = time.perf_counter()
                written = export_gantt(timeline, fmt, Path(directory) / f"gantt{k}.{fmt}")
                seconds.append(time.perf_counter() - began)
            print(f"{fmt:10s} {statistics.median(seconds):9.2f} {min(seconds):7.2f}-{max(seconds):<7.2f} "
                  f"{written.stat().st_size / 1024:9,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
