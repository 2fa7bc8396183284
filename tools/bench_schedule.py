"""Benchmark the scheduling strategies on the light models and models/*.onnx (prints a table; not a test).

    python tools/bench_schedule.py                       # every model, edge-soc and multi-npu, default limits
    python tools/bench_schedule.py --models resnet50,densenet121 --targets edge-soc --time-limit 10
    python tools/bench_schedule.py --scaling 4,8,16,24,48    # GPT decoders of that many blocks: compile time

Per model and target: makespan of single:cpu, greedy, HEFT and CP-SAT, the lower bound, CP-SAT's gap to it,
CP-SAT / HEFT, and CP-SAT's compile time (problem building + HEFT + windows + exact re-timing).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parent.parent
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def model_paths() -> dict[str, Path]:
    paths = {p.stem.removeprefix("light_"): p for p in sorted(LIGHT_DIR.glob("light_*.onnx"))}
    paths.update({p.stem: p for p in sorted((REPO / "models").glob("*.onnx"))})
    return paths


def chosen_models(parser: argparse.ArgumentParser, names: str) -> dict[str, Path]:
    """The models a comma-separated ``--models`` names (all when empty); an unknown name is a usage error
    that lists the choices."""
    paths = model_paths()
    chosen = [n for n in names.split(",") if n] or list(paths)
    unknown = [n for n in chosen if n not in paths]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(paths)}")
    return {n: paths[n] for n in chosen}


def main(argv: list[str] | None = None) -> int:
    from hetc.frontend import load_onnx
    from hetc.passes import optimize
    from hetc.schedule import schedule
    from hetc.target import load_target

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--targets", default="edge-soc,multi-npu")
    parser.add_argument("--time-limit", type=float, default=None, help="CP-SAT limit in s (default: per size)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scaling", default="", help="comma-separated GPT block counts: compile-time scaling")
    args = parser.parse_args(argv)
    if args.scaling:
        return scaling([int(b) for b in args.scaling.split(",")], args.targets.split(",")[0], args.time_limit)
    paths = chosen_models(parser, args.models)
    names = list(paths)
    header = (f"{'model':16s} {'target':10s} {'nodes':>5s} {'cpu ms':>9s} {'greedy':>9s} {'heft':>9s} "
              f"{'cpsat':>9s} {'bound':>9s} {'gap':>6s} {'cp/heft':>7s} {'status':>9s} {'compile s':>9s}")
    print(header)
    print("-" * len(header))
    ratios, gaps = [], []
    for target_name in args.targets.split(","):
        target = load_target(target_name)
        for name in names:
            try:
                graph = optimize(load_onnx(paths[name]))
            except Exception as error:  # a model another stage cannot import yet: report, keep going
                print(f"{name:16s} {target_name:10s} import failed: {error}")
                continue
            spans = {}
            for strategy in ("single:cpu", "greedy", "heft"):
                spans[strategy] = schedule(graph, target, strategy).makespan_ns
            began = time.perf_counter()
            cp = schedule(graph, target, "cpsat", time_limit_s=args.time_limit, num_workers=args.workers)
            compile_s = time.perf_counter() - began
            ratios.append(cp.makespan_ns / spans["heft"])
            gaps.append(cp.gap)
            print(f"{name:16s} {target_name:10s} {len(graph):5d} {spans['single:cpu'] / 1e6:9.3f} "
                  f"{spans['greedy'] / 1e6:9.3f} {spans['heft'] / 1e6:9.3f} {cp.makespan_ns / 1e6:9.3f} "
                  f"{cp.lower_bound_ns / 1e6:9.3f} {cp.gap:6.1%} {ratios[-1]:7.3f} {cp.stats.status:>9s} "
                  f"{compile_s:9.2f}", flush=True)
    if ratios:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"\ngeometric mean CP-SAT / HEFT makespan: {geomean:.3f} over {len(ratios)} runs; "
              f"gap <= 5% on {sum(g <= 0.05 for g in gaps)}/{len(gaps)}")
    return 0


def scaling(block_counts: list[int], target_name: str, time_limit_s: float | None) -> int:
    """Schedule GPT decoders (tools/make_models.py) of growing depth; print nodes, times and makespans."""
    import importlib.util
    import tempfile

    from hetc.frontend import load_onnx
    from hetc.passes import optimize
    from hetc.schedule import default_time_limit, schedule
    from hetc.target import load_target

    spec = importlib.util.spec_from_file_location("make_models", REPO / "tools" / "make_models.py")
    make_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_models)
    target = load_target(target_name)
    print(f"{'blocks':>6s} {'nodes':>6s} {'limit s':>7s} {'heft s':>7s} {'cpsat s':>7s} {'search s':>8s} "
          f"{'windows':>7s} {'cp/heft':>7s} {'gap':>6s}")
    for blocks in block_counts:
        make_models.GPT["blocks"] = blocks
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"gpt{blocks}.onnx"
            onnx.save(make_models.gpt_decoder(), path)
            graph = optimize(load_onnx(path))
        began = time.perf_counter()
        heft_span = schedule(graph, target, "heft").makespan_ns
        heft_s = time.perf_counter() - began
        began = time.perf_counter()
        cp = schedule(graph, target, "cpsat", time_limit_s=time_limit_s)
        cp_s = time.perf_counter() - began
        limit = time_limit_s or default_time_limit(len(graph))
        print(f"{blocks:6d} {len(graph):6d} {limit:7.1f} {heft_s:7.2f} {cp_s:7.2f} "
              f"{cp.stats.details['solver_wall_s']:8.2f} {cp.stats.details['windows']:7d} "
              f"{cp.makespan_ns / heft_span:7.3f} {cp.gap:6.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
