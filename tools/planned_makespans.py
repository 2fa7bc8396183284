"""Scheduled and planned makespans of the light models, per strategy: what the scheduler promised against what
the memory planner kept (docs/benchmarks.md, "Bounded lead").

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/planned_makespans.py \\
        --targets edge-soc multi-npu --strategies heft cpsat

One JSON line per model and target: per strategy [scheduled ms, planned ms, spills, CPU s of both stages (the
CP-SAT child's not counted)]. Run it with PYTHONPATH set to another checkout to compare two versions.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnx

from hetc.frontend import load_onnx
from hetc.memory.planner import plan_memory
from hetc.passes import optimize
from hetc.schedule import schedule
from hetc.target import load_target
from hetc.target.tiling import TILE_BUDGET_FRACTION, tile_graph

LIGHT = Path(onnx.__file__).parent / "backend/test/data/light"
MODELS = ["bvlc_alexnet", "zfnet512", "shufflenet", "squeezenet", "inception_v1", "inception_v2", "resnet50",
          "densenet121", "vgg19"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--targets", nargs="+", default=["edge-soc", "multi-npu"])
    parser.add_argument("--strategies", nargs="+", default=["heft", "cpsat"])
    args = parser.parse_args()
    for target_name in args.targets:
        target = load_target(target_name)
        for model in args.models:
            graph = tile_graph(optimize(load_onnx(str(LIGHT / f"light_{model}.onnx"))), target, TILE_BUDGET_FRACTION)
            row: dict = {"model": model, "target": target_name}
            for strategy in args.strategies:
                began = time.process_time()
                scheduled = schedule(graph, target, strategy=strategy)
                plan = plan_memory(graph, scheduled, target)
                row[strategy] = [round(scheduled.makespan_ns / 1e6, 3), round(plan.schedule.makespan_ns / 1e6, 3),
                                 len(plan.spills), round(time.process_time() - began, 1)]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
