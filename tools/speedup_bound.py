"""How fast could a target run each light model's tiles at best? Context for issue 14's speed-up goals.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/speedup_bound.py --target edge-soc

Per light model: the untiled build's planned makespan (hetc's CP-SAT build with ``tiling=False``, the "before"
of issue 14), the tiled build's, and a lower bound on the makespan of any schedule of the tiled graph the
build uses (lowered as the build lowers it), under the target's cost model: the scheduler's own
``hetc.schedule.bound.lower_bound``, the highest of the critical path (every node on its fastest device, with
the weight, input and output transfers no schedule avoids), the load-balancing bound (each node's work split
fractionally over its candidate devices, the weights an accelerator's share reads streamed through the DMA
engines into its memory once; a linear program), DRAM's (every weight and input read from DRAM once,
every output written there, at DRAM's bandwidth) and DRAM's after a cut (what the nodes after a node read
beyond what the on-chip memories hold ahead streams only once that node and all it depends on have ended).
It ignores activation transfers and resource conflicts
along the path, so no placement or order of these tiles beats it; another tiling could (a whole node costs no
more than its tiles, but a grouped convolution only runs on the NPU cut per group). Printed: the speed-up the
tiled build reaches and the most any build could reach (untiled / bound), and their geometric means over the
nine models.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hetc.frontend import load_onnx  # noqa: E402
from hetc.passes import optimize  # noqa: E402
from hetc.passes.alias_ops import alias_ops  # noqa: E402
from hetc.pipeline import BuildOptions, build  # noqa: E402
from hetc.schedule.bound import lower_bound  # noqa: E402
from hetc.schedule.problem import build_problem  # noqa: E402
from hetc.target import load_target  # noqa: E402
from hetc.target.lowering import fusion_check, lowering_rules  # noqa: E402
from hetc.target.tiling import tile_graph  # noqa: E402

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
          "vgg19", "zfnet512")


def scheduled_graph(path: Path, target):
    """The graph a build of ``path`` schedules: lowered for ``target``, tiled, Split/Slice/Concat as views."""
    tiled = tile_graph(optimize(load_onnx(path), lowerings=lowering_rules(target),
                                fusion_check=fusion_check(target)), target)
    return alias_ops(tiled, target.joins_on_chip)


def bound_ns(path: Path, target) -> int:
    """``hetc.schedule.bound.lower_bound`` of the graph the build schedules."""
    return lower_bound(build_problem(scheduled_graph(path, target), target))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="edge-soc")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    target = load_target(args.target)
    print("| model | untiled planned ms | tiled planned ms | bound ms | speed-up reached | at most |\n"
          "|---|---|---|---|---|---|")
    reached, possible = [], []
    for name in args.models.split(","):
        path = LIGHT / f"light_{name}.onnx"
        bound = bound_ns(path, target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before = build(str(path), BuildOptions(target=target, tiling=False)).schedule.makespan_ns
            after = build(str(path), BuildOptions(target=target)).schedule.makespan_ns
        reached.append(before / after)
        possible.append(before / bound)
        print(f"| {name} | {before / 1e6:,.2f} | {after / 1e6:,.2f} | {bound / 1e6:,.2f} | {before / after:.3f}x "
              f"| {before / bound:.2f}x |", flush=True)
    geo = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs))  # noqa: E731
    print(f"\ngeometric mean: reached {geo(reached):.3f}x, at most {geo(possible):.3f}x with these tiles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
