"""Print how long capability checks and costs take over real graphs, per preset, and where nodes may run.

    python tools/target_cost_speed.py [model ...]     (default: the light DenseNet-121, ResNet-50, Inception v2)

For each model and preset: the node count, the wall time of one full sweep of ``supports`` + ``cost`` over every
(node, device) pair (cold: first call per node; warm: cached work), how many nodes each device supports, and the
sum of the per-node fastest costs (a crude serial bound, not a schedule).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import onnx

from hetc.frontend import load_onnx
from hetc.passes import optimize
from hetc.target import list_presets, load_target

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def sweep(graph, target) -> tuple[dict[str, int], float]:
    supported = {d: 0 for d in target.devices}
    fastest_total = 0.0
    for n in graph.nodes:
        costs = []
        for d in target.devices:
            if target.supports(n, d):
                supported[d] += 1
                costs.append(target.cost(n, d))
        fastest_total += min(costs)
    return supported, fastest_total


def main(paths: list[str]) -> None:
    models = paths or [str(LIGHT / f"light_{m}.onnx") for m in ("densenet121", "resnet50", "inception_v2")]
    for path in models:
        graph = optimize(load_onnx(path))
        for preset, _ in list_presets():
            target = load_target(preset)
            pairs = len(graph.nodes) * len(target.devices)
            t0 = time.perf_counter()
            supported, fastest = sweep(graph, target)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            sweep(graph, target)
            warm = time.perf_counter() - t0
            placed = ", ".join(f"{d} {k}" for d, k in supported.items())
            print(f"{Path(path).stem:<22} {preset:<10} {len(graph.nodes):>5} nodes  {pairs:>6} pairs  "
                  f"cold {cold * 1e3:7.1f} ms  warm {warm * 1e3:7.1f} ms  "
                  f"({warm / pairs * 1e6:5.1f} µs/pair)  supported: {placed}  sum of fastest {fastest / 1e3:,.0f} µs")


if __name__ == "__main__":
    main(sys.argv[1:])
