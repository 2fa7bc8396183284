"""Planned against simulated makespan of the bundles that ship: how honest the plan's timing is.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/plan_vs_sim.py --targets edge-soc,multi-npu
    PYTHONPATH=<checkout> python tools/plan_vs_sim.py --models resnet50,alexnet --targets multi-npu

Per model and target, one whole build (``hetc.pipeline.build``: tiling, CP-SAT, memory planning) and a
timing-only simulation of its bundle (``hetc.sim.simulate``, DRAM contention on). Prints the planned
makespan (the schedule the bundle carries), the simulated one and their ratio, then the range and the
median of the ratios per target. The simulator runs each engine's program as soon as its semaphores allow,
sharing DRAM's bandwidth among the tasks streaming through it; a plan whose timing follows the same rule
agrees with it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_schedule import chosen_models  # noqa: E402  (the light models and models/*.onnx)


def main(argv: list[str] | None = None) -> int:
    from hetc.pipeline import BuildOptions, build
    from hetc.sim import simulate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--targets", default="edge-soc,multi-npu")
    args = parser.parse_args(argv)
    paths = chosen_models(parser, args.models)
    names = list(paths)
    print("| target | model | planned µs | simulated µs | simulated / planned |\n|---|---|---:|---:|---:|")
    for target in args.targets.split(","):
        ratios = []
        for name in names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # the accelerators' idle warnings of tiny models
                result = build(str(paths[name]), BuildOptions(target=target))
            planned = result.schedule.makespan_ns
            simulated = simulate(result.bundle, functional=False).makespan_ns
            ratios.append(simulated / planned)
            print(f"| {target} | {name} | {planned / 1000:,.1f} | {simulated / 1000:,.1f} | {ratios[-1]:.3f} |",
                  flush=True)
        print(f"| {target} | range, median | | | {min(ratios):.3f}-{max(ratios):.3f}, "
              f"{statistics.median(ratios):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
