"""How fast could a target run each light model's tiles at best? Context for issue 14's speed-up goals.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/speedup_bound.py --target edge-soc

Per light model: the untiled build's planned makespan (hetc's CP-SAT build with ``tiling=False``, the "before"
of issue 14), the tiled build's, and a lower bound on the makespan of any schedule of the tiled graph the
build uses, under the target's cost model: each node's work split fractionally over every device with a
kernel for it (whatever its size), each device's share summed, the largest minimised (a linear program,
OR-Tools' GLOP); an accelerator's share of the weights also passes through its DMA engines from DRAM at
least once. It ignores activation transfers and dependencies, so no placement or order of these tiles beats
it; another tiling could (a whole node costs no more than its tiles, but a grouped convolution only runs on
the NPU cut per group). Printed: the
speed-up the tiled build reaches and the most any build could reach (untiled / bound), and their geometric
means over the nine models.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import onnx
from ortools.linear_solver import pywraplp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hetc.frontend import load_onnx  # noqa: E402
from hetc.ir.tiles import is_alias  # noqa: E402
from hetc.passes import optimize  # noqa: E402
from hetc.pipeline import BuildOptions, build  # noqa: E402
from hetc.target import load_target  # noqa: E402
from hetc.target.capability import kernel_support  # noqa: E402
from hetc.target.tiling import tile_graph  # noqa: E402

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
          "vgg19", "zfnet512")


def balance_bound_ns(graph, target) -> float:
    """min T: each node's work split over the devices that have a kernel for it, no device busier than T."""
    solver = pywraplp.Solver.CreateSolver("GLOP")
    horizon = solver.NumVar(0, solver.infinity(), "T")
    load = {d: 0 for d in target.devices}
    fetch = {d: 0 for d in target.devices}   # weight bytes an accelerator's DRAM engines must bring in
    dram_bw = {d: sum(e.bandwidth for e in target.engines_between(target.dram, target.devices[d].memory))
               for d in target.devices if target.devices[d].memory != target.dram}
    for node in graph.nodes:
        if is_alias(node):
            continue
        weights = sum(v.nbytes for v in node.inputs if v is not None and v.is_const)
        shares = []
        for d in target.devices:
            if kernel_support(target, node, d):
                x = solver.NumVar(0, 1, f"x{node.id}_{d}")
                shares.append(x)
                load[d] = load[d] + x * target.cost(node, d)
                if d in dram_bw:
                    fetch[d] = fetch[d] + x * (weights / dram_bw[d])
        solver.Add(sum(shares) == 1)
    for expr in [*load.values(), *fetch.values()]:
        if not isinstance(expr, (int, float)):
            solver.Add(expr <= horizon)
    solver.Minimize(horizon)
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        raise RuntimeError("the balance LP did not solve")
    return horizon.solution_value()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="edge-soc")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    target = load_target(args.target)
    print(f"| model | untiled planned ms | tiled planned ms | bound ms | speed-up reached | at most |\n"
          f"|---|---|---|---|---|---|")
    reached, possible = [], []
    for name in args.models.split(","):
        path = LIGHT / f"light_{name}.onnx"
        bound = balance_bound_ns(tile_graph(optimize(load_onnx(path)), target), target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before = build(str(path), BuildOptions(target=target, tiling=False)).schedule.makespan_ns
            after = build(str(path), BuildOptions(target=target)).schedule.makespan_ns
        reached.append(before / after)
        possible.append(before / bound)
        print(f"| {name} | {before / 1e6:,.1f} | {after / 1e6:,.1f} | {bound / 1e6:,.1f} | {before / after:.2f}x "
              f"| {before / bound:.2f}x |", flush=True)
    geo = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs))  # noqa: E731
    print(f"\ngeometric mean: reached {geo(reached):.2f}x, at most {geo(possible):.2f}x with these tiles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
