"""CPU seconds per compile stage (tiling, schedule, memory planning) of one model on one target (issue 14).

    python tools/compile_stages.py vgg19 multi-npu                   # a light model, the default tile budget
    python tools/compile_stages.py vgg19 multi-npu --fraction 0.1667 # tiles of at most 1/6 of a scratchpad

On the shared machine the wall clock mostly measures the other jobs; process CPU time is what a stage costs.
The model's own weights are kept (the light models' are cheap to import); the stages after import do not
depend on the weights' values. Prints one JSON line: CPU seconds per stage, the makespans, the planner's spills.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hetc.frontend import load_onnx  # noqa: E402
from hetc.memory.planner import plan_memory  # noqa: E402
from hetc.passes import optimize  # noqa: E402
from hetc.schedule import schedule  # noqa: E402
from hetc.target import load_target  # noqa: E402
from hetc.target.tiling import TILE_BUDGET_FRACTION, tile_graph  # noqa: E402

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a light model without the light_ prefix, or a path to an .onnx file")
    ap.add_argument("target")
    ap.add_argument("--fraction", type=float, default=TILE_BUDGET_FRACTION, help="tile budget, share of a scratchpad")
    args = ap.parse_args()
    path = Path(args.model) if args.model.endswith(".onnx") else LIGHT_DIR / f"light_{args.model}.onnx"
    target = load_target(args.target)
    out: dict = {"model": args.model, "target": args.target, "fraction": args.fraction}
    clock = time.process_time()
    graph = optimize(load_onnx(str(path)))
    out["import_cpu_s"] = round(time.process_time() - clock, 2)
    clock = time.process_time()
    graph = tile_graph(graph, target, args.fraction)
    out["tiling_cpu_s"], out["nodes"] = round(time.process_time() - clock, 2), len(graph.nodes)
    clock = time.process_time()
    sched = schedule(graph, target)   # CP-SAT's children are not in this process's CPU time: see their wall
    out["schedule_cpu_s"] = round(time.process_time() - clock, 2)
    out["schedule_ms"], out["status"] = sched.makespan_ns / 1e6, sched.stats.status
    out["cpsat"] = {k: sched.stats.details.get(k) for k in ("windows", "window_status", "solver_wall_s")}
    clock = time.process_time()
    plan = plan_memory(graph, sched, target)
    out["memory_cpu_s"] = round(time.process_time() - clock, 2)
    out["planned_ms"] = plan.schedule.makespan_ns / 1e6
    out["planner"] = {k: (len(v) if isinstance(v, list) else v) for k, v in plan.details.items()
                      if k in ("spills", "spill_rounds", "postponed_transfers", "delayed_tasks", "moved_nodes")}
    out["spills"] = len(plan.spills)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
