"""The schedules that ship: CP-SAT against HEFT after tiling and memory planning (prints a table; not a test).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_shipped.py
    python tools/bench_shipped.py --models resnet50,moe --targets edge-soc --json shipped.json

Per model and target, two whole builds (``hetc.pipeline.build``, tiling on, timing simulation, no validation):
one scheduled by HEFT and one by CP-SAT. Reported: each bundle's planned makespan (the schedule after memory
planning, the one emitted), CP-SAT's gap as shipped, the planner's re-timing (shipped / the same schedule as
its scheduler made it: CP-SAT's, or HEFT's where HEFT's plan ships; '-': the planner kept its times) and
CP-SAT / HEFT, and how far the CP-SAT build's schedule was from fitting before memory planning repaired it (its
most crowded on-chip memory: live bytes / capacity, ``MemoryStats.scheduled_live_bytes``). Issue 15's goals:
CP-SAT <= HEFT on every row, geometric mean <= 0.95 on edge-soc, re-timed <= 1.01.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_schedule import chosen_models  # noqa: E402  (the light models and models/*.onnx)


def build_once(path: Path, target: str, scheduler: str) -> dict:
    from hetc.pipeline import BuildOptions, build

    began = time.perf_counter()
    result = build(str(path), BuildOptions(target=target, scheduler=scheduler))
    solver = result.summary.get("solver", {})
    scheduled_us = solver.get("scheduled_us")   # the shipped schedule before memory planning re-timed it
    # how far that schedule was from fitting: its most crowded memory, live bytes / capacity
    fit = max(((s.scheduled_live_bytes / s.capacity_bytes, m) for m, s in result.plan.stats.items()
               if s.scheduled_live_bytes is not None), default=None)
    return {"planned_ns": result.schedule.makespan_ns, "gap": result.summary.get("gap"),
            "scheduled_ns": None if scheduled_us is None else scheduled_us * 1000,
            "scheduled_fit": fit, "wall_s": time.perf_counter() - began}


def main(argv: list[str] | None = None) -> int:
    from hetc.errors import HetcError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--targets", default="edge-soc,multi-npu")
    parser.add_argument("--json", default="", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    paths = chosen_models(parser, args.models)
    names = list(paths)
    rows: list[dict] = []
    print(f"{'model':16s} {'target':10s} {'heft µs':>12s} {'cpsat µs':>12s} {'cp/heft':>7s} {'gap':>6s} "
          f"{'re-timed':>8s} {'wall s':>6s}  as scheduled: fullest memory, live / capacity", flush=True)
    for target in args.targets.split(","):
        for name in names:
            row: dict = {"model": name, "target": target}
            try:
                heft, cp = (build_once(paths[name], target, s) for s in ("heft", "cpsat"))
            except HetcError as error:   # recorded, the sweep over models goes on
                row["error"] = f"{type(error).__name__}: {error}"
                print(f"{name:16s} {target:10s} failed: {row['error'][:100]}", flush=True)
                rows.append(row)
                continue
            row.update(heft_ns=heft["planned_ns"], cpsat_ns=cp["planned_ns"], gap=cp["gap"],
                       ratio=cp["planned_ns"] / heft["planned_ns"],
                       retimed=cp["planned_ns"] / cp["scheduled_ns"] if cp["scheduled_ns"] else None,
                       scheduled_fit=cp["scheduled_fit"], wall_s=heft["wall_s"] + cp["wall_s"])
            rows.append(row)
            retimed = f"{row['retimed']:8.3f}" if row["retimed"] and row["retimed"] != 1 else f"{'-':>8s}"
            gap = f"{row['gap']:6.1%}" if isinstance(row["gap"], (int, float)) else f"{'-':>6s}"
            fit = row["scheduled_fit"]
            fit = f"{fit[0]:5.2f} {fit[1]}" if fit else "-"
            print(f"{name:16s} {target:10s} {row['heft_ns'] / 1e3:12,.1f} {row['cpsat_ns'] / 1e3:12,.1f} "
                  f"{row['ratio']:7.3f} {gap} {retimed} {row['wall_s']:6.1f}  {fit}", flush=True)
    for target in args.targets.split(","):
        ratios = [r["ratio"] for r in rows if r["target"] == target and "ratio" in r]
        if ratios:
            geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            worse = [r["model"] for r in rows if r["target"] == target and r.get("ratio", 0) > 1.0]
            print(f"{target}: geometric mean CP-SAT / HEFT (shipped) {geomean:.3f} over {len(ratios)} models; "
                  f"CP-SAT worse than HEFT on {len(worse)}: {', '.join(worse) or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
