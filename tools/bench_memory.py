"""Benchmark the memory planner (prints tables; not a test).

    python tools/bench_memory.py                          # light models on edge-soc (HEFT schedules) + random sets
    python tools/bench_memory.py --strategy cpsat --schedule-limit 5 --target multi-npu
    python tools/bench_memory.py --skip-random

Per light model and memory: the planner's peak, the lower bound (most bytes live at one instant), no reuse
(every buffer its own bytes), plain greedy-by-size (TFLite) on the planner's own lifetimes, and the planner's
time for the whole model. DRAM figures include the read-only constants region.

Random interval sets of 200 and 2,000 buffers: the packer's peak and time against a plain hill-climbing
allocator (random swaps in the placement order, full best-fit decode, keep if not worse) given 10x the time.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import onnx

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _pad(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def model_rows(strategy: str, target_name: str, schedule_limit: float | None,
               repairs: list[dict]) -> list[dict]:
    """One row per model and memory; ``repairs`` gets one row per model: planner time (wall and CPU, the
    latter steadier on a loaded machine), node moves, spills, postponed transfers, delayed tasks, and the
    makespan before and after the planner's repairs."""
    from hetc.frontend import load_onnx
    from hetc.memory import plan_memory
    from hetc.memory.packing import greedy_by_size
    from hetc.passes import optimize
    from hetc.schedule import schedule
    from hetc.target import load_target

    target = load_target(target_name)
    rows = []
    for path in sorted(LIGHT_DIR.glob("light_*.onnx")):
        graph = optimize(load_onnx(path))
        sched = schedule(graph, target, strategy=strategy, time_limit_s=schedule_limit)
        began, cpu_began = time.perf_counter(), time.process_time()
        plan = plan_memory(graph, sched, target)
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
        plan.verify(target)
        repairs.append({"model": path.stem.removeprefix("light_"), "seconds": seconds, "cpu": cpu_seconds,
                        "moves": len(plan.details.get("moved_nodes", ())), "spills": len(plan.spills),
                        "postponed": len(plan.details.get("postponed_transfers", ())),
                        "delayed": len(plan.details.get("delayed_tasks", ())),
                        "scheduled_ns": sched.makespan_ns, "planned_ns": plan.schedule.makespan_ns})
        for memory, stats in plan.stats.items():
            align = target.memories[memory].alignment
            base = plan.constants_bytes if memory == target.dram else 0
            mine = [b for b in plan.buffers if b.memory == memory and b.kind != "constant"]
            groups: dict[str, list[int]] = {}
            for b in mine:                   # one storage per alias group, as the planner packs them
                g = groups.setdefault(b.alias_of or b.id, [b.start_ns, b.end_ns, b.size])
                g[0], g[1], g[2] = min(g[0], b.start_ns), max(g[1], b.end_ns), max(g[2], b.size)
            intervals = [tuple(g) for g in groups.values()]
            greedy = greedy_by_size(intervals, align)
            greedy_peak = max((o + _pad(s, align) for o, (_, _, s) in zip(greedy, intervals)), default=0)
            rows.append({"model": path.stem.removeprefix("light_"), "memory": memory, "peak": stats.peak_bytes,
                         "bound": stats.lower_bound_bytes, "no_reuse": base + sum(_pad(b.size, align) for b in mine),
                         "greedy": base + greedy_peak, "spilled": stats.spilled_bytes, "seconds": seconds,
                         "capacity": stats.capacity_bytes})
    return rows


def random_intervals(n: int, seed: int) -> list[tuple[int, int, int]]:
    """DNN-like: log-uniform sizes from 1 KiB to 4 MiB, mostly short lifetimes with a few long ones."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randrange(n)
        length = 1 + int(rng.expovariate(1 / 8)) if rng.random() < 0.9 else rng.randrange(n // 4, n)
        out.append((start, start + length, int(2 ** rng.uniform(10, 22))))
    return out


def plain_hill_climb(intervals: list[tuple[int, int, int]], alignment: int, seconds: float, seed: int) -> int:
    """The baseline: random order, swap two positions, full best-fit decode, keep the swap unless worse."""
    from hetc.memory.packing import best_fit

    rng = random.Random(seed)
    order = list(range(len(intervals)))
    rng.shuffle(order)

    def peak(o: list[int]) -> int:
        offsets = best_fit(intervals, o, alignment)
        return max(off + _pad(intervals[i][2], alignment) for i, off in enumerate(offsets))

    best = peak(order)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        a, b = rng.randrange(len(order)), rng.randrange(len(order))
        order[a], order[b] = order[b], order[a]
        cand = peak(order)
        if cand <= best:
            best = cand
        else:
            order[a], order[b] = order[b], order[a]
    return best


def random_rows() -> list[dict]:
    from hetc.memory.packing import lower_bound, pack

    rows = []
    for n in (200, 2000):
        for seed in (1, 2, 3):
            intervals = random_intervals(n, seed)
            result = pack(intervals, 64)
            baseline = plain_hill_climb(intervals, 64, 10 * result.seconds, seed)
            rows.append({"n": n, "seed": seed, "bound": lower_bound(intervals, 64), "peak": result.peak,
                         "method": result.method, "seconds": result.seconds, "climb": baseline,
                         "climb_seconds": 10 * result.seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", default="heft", help="scheduler strategy for the light models")
    parser.add_argument("--schedule-limit", type=float, default=None, help="CP-SAT limit in s (cpsat only)")
    parser.add_argument("--target", default="edge-soc")
    parser.add_argument("--skip-random", action="store_true")
    args = parser.parse_args(argv)

    mib = 1 << 20
    print(f"Light models on {args.target} ({args.strategy} schedules); sizes in MiB")
    print("| model | memory | peak | lower bound | peak/bound | no reuse | greedy-by-size | spilled | plan s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    repairs: list[dict] = []
    rows = model_rows(args.strategy, args.target, args.schedule_limit, repairs)
    for r in rows:
        print(f"| {r['model']} | {r['memory']} | {r['peak'] / mib:.3f} | {r['bound'] / mib:.3f} | "
              f"{r['peak'] / r['bound']:.4f} | {r['no_reuse'] / mib:.3f} | {r['greedy'] / mib:.3f} | "
              f"{r['spilled'] / mib:.3f} | {r['seconds']:.2f} |")
    print(f"\nCapacity repairs on {args.target}; makespans in µs")
    print("| model | plan s | plan CPU s | moved nodes | spills | postponed | delayed | scheduled | planned |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in repairs:
        print(f"| {r['model']} | {r['seconds']:.2f} | {r['cpu']:.2f} | {r['moves']} | {r['spills']} | "
              f"{r['postponed']} | {r['delayed']} | {r['scheduled_ns'] / 1000:.1f} | {r['planned_ns'] / 1000:.1f} |")
    ratios = [r["peak"] / r["bound"] for r in rows if r["bound"]]
    scratch = [r["peak"] / r["bound"] for r in rows if r["bound"] and r["memory"] != "dram"]
    greedy = [r["greedy"] / r["bound"] for r in rows if r["bound"]]
    times = {r["model"]: r["seconds"] for r in rows}
    print(f"\ngeometric mean peak/bound: {_geomean(ratios):.4f} (all memories), {_geomean(scratch):.4f} "
          f"(scratchpads); greedy-by-size alone: {_geomean(greedy):.4f}; slowest plan: "
          f"{max(times.values()):.2f} s ({max(times, key=times.get)})")
    if args.skip_random:
        return 0
    print("\nRandom interval sets (alignment 64; sizes in MiB)")
    print("| buffers | seed | lower bound | packer peak | peak/bound | method | packer s | "
          "plain hill climb (10x time) | its peak/bound |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in random_rows():
        print(f"| {r['n']} | {r['seed']} | {r['bound'] / mib:.2f} | {r['peak'] / mib:.2f} | "
              f"{r['peak'] / r['bound']:.4f} | {r['method']} | {r['seconds']:.2f} | {r['climb'] / mib:.2f} "
              f"in {r['climb_seconds']:.1f} s | {r['climb'] / r['bound']:.4f} |")
    return 0


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


if __name__ == "__main__":
    sys.exit(main())
