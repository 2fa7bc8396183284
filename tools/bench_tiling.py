"""Tiling benchmark (issue 14): where the FLOPs run, how fast, how many tiles, how many DMA bytes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_tiling.py            # all models, both targets
    python tools/bench_tiling.py --models vgg19,resnet50 --targets multi-npu --tiling both   # tiled vs untiled
    python tools/bench_tiling.py --json out.json

Per (model, target): one build with random weights (the light models' constant weights would make every
tile look right) and CP-SAT, then a timing simulation of the bundle. Printed per case: share of FLOPs per
device kind, planned and simulated makespan, tiled nodes and tiles per node, DMA bytes moved against the
compulsory bytes (each weight and each graph input and output once), the NPU cores' busy share, compile time.
``--tiling both`` also builds with tiling off, side by side in the same run.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hetc.api import simulate  # noqa: E402
from hetc.ir.tiles import is_alias  # noqa: E402
from hetc.pipeline import BuildOptions, build  # noqa: E402
from hetc.target.flops import node_flops  # noqa: E402

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS_DIR = REPO / "models"
LIGHT = {p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("*.onnx")}
TARGETS = ("edge-soc", "multi-npu")


@dataclass
class Case:
    model: str
    target: str
    tiling: bool
    error: str | None = None
    nodes: int = 0
    flops_share: dict[str, float] = field(default_factory=dict)   # device kind -> share of FLOPs
    flops: int = 0
    planned_us: float | None = None
    simulated_us: float | None = None
    gap: float | None = None
    tiled_nodes: int = 0
    tiles: int = 0
    max_tiles: int = 0
    dma_bytes: int = 0
    compulsory_bytes: int = 0
    npu_busy: float | None = None     # mean busy share of the NPU devices over the makespan
    compile_s: float | None = None
    schedule_s: float | None = None
    # CPU seconds of the build, its own and its CP-SAT children's: on a shared machine the wall clock above
    # mostly measures the other jobs, this what the build itself costs.
    compile_cpu_s: float | None = None
    stage_s: dict[str, float] = field(default_factory=dict)      # wall seconds per pipeline stage


def model_paths(names: list[str] | None) -> dict[str, Path]:
    found = {p.stem.removeprefix("light_"): p for p in sorted(LIGHT_DIR.glob("*.onnx"))}
    found |= {p.stem: p for p in sorted(MODELS_DIR.glob("*.onnx"))}
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise SystemExit(f"unknown models {missing}; known: {', '.join(found)}")
        return {n: found[n] for n in names}
    return found


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the CP-SAT searches run in forked children)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(name: str, path: Path, target: str, tiling: bool, time_limit: float | None) -> Case:
    case = Case(name, target, tiling)
    options = {"target": target, "weights": "random", "time_limit_s": time_limit}
    if "tiling" in {f.name for f in fields(BuildOptions)}:
        options["tiling"] = tiling
    elif tiling:
        case.error = "this hetc has no tiling option"
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    try:
        result = build(path, BuildOptions(**options))
    except Exception as exc:  # a failed build is a row, not the end of the benchmark
        case.error = f"{type(exc).__name__}: {exc}"
        return case
    case.compile_s = time.perf_counter() - t0
    case.compile_cpu_s = cpu_seconds() - cpu0
    case.stage_s = dict(result.summary.get("stage_s", {}))
    case.schedule_s = case.stage_s.get("schedule")
    graph, sched, target_obj = result.graph, result.plan.schedule, result.target
    kinds = {d: dev.kind for d, dev in target_obj.devices.items()}
    flops: Counter[str] = Counter()
    for node in graph.nodes:
        if is_alias(node) or node.id not in sched.placement:
            continue
        flops[kinds[sched.placement[node.id]]] += node_flops(node)
    case.flops = sum(flops.values())
    total = case.flops or 1
    case.flops_share = {k: v / total for k, v in sorted(flops.items())}
    case.nodes = sum(1 for n in graph.nodes if not is_alias(n))
    per_node = Counter(n.tile.of for n in graph.nodes if n.tile is not None)
    case.tiled_nodes, case.tiles = len(per_node), sum(per_node.values())
    case.max_tiles = max(per_node.values(), default=0)
    case.dma_bytes = sum(t.bytes for t in sched.tasks if t.kind == "transfer")
    constants = sum(v.nbytes for v in graph.values.values() if v.is_const)
    case.compulsory_bytes = constants + sum(v.nbytes for v in [*graph.inputs, *graph.outputs] if not v.is_const)
    case.planned_us = sched.makespan_ns / 1000
    case.gap = sched.gap
    npus = [d for d, k in kinds.items() if k == "npu"]
    if npus and sched.makespan_ns:
        busy = {d: 0 for d in npus}
        for t in sched.tasks:
            if t.kind == "compute" and t.engine in busy:
                busy[t.engine] += t.end_ns - t.start_ns
        case.npu_busy = statistics.mean(b / sched.makespan_ns for b in busy.values())
    case.simulated_us = simulate(result.bundle, functional=False).makespan_ns / 1000
    return case


def row(c: Case) -> str:
    if c.error:
        return f"| {c.model} | {c.target} | {'on' if c.tiling else 'off'} | error: {c.error[:90]} |"
    share = ", ".join(f"{k} {v:.0%}" for k, v in c.flops_share.items())
    busy = f"{c.npu_busy:.0%}" if c.npu_busy is not None else "-"
    return (f"| {c.model} | {c.target} | {'on' if c.tiling else 'off'} | {share} | {c.planned_us:,.0f} | "
            f"{c.simulated_us:,.0f} | {c.gap:.1%} | {c.tiled_nodes} / {c.tiles} (max {c.max_tiles}) | "
            f"{c.dma_bytes / 2**20:,.1f} / {c.compulsory_bytes / 2**20:,.1f} | {busy} | {c.compile_s:.1f} "
            f"(cpu {c.compile_cpu_s:.1f}; {slowest_stages(c)}) |")


def slowest_stages(c: Case, count: int = 2) -> str:
    """The stages that took longest, with their wall seconds: where the compile time goes."""
    ranked = sorted(c.stage_s.items(), key=lambda kv: -kv[1])[:count]
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in ranked)


HEADER = ("| model | target | tiling | FLOPs by device kind | planned µs | simulated µs | gap | tiled nodes / "
          "tiles (max) | DMA MiB / compulsory MiB | NPU busy | compile s (cpu; slowest stages) |\n|" + "---|" * 11)


def summary(cases: list[Case]) -> list[str]:
    lines = []
    for target in sorted({c.target for c in cases}):
        for tiling in sorted({c.tiling for c in cases}):
            ok = [c for c in cases if c.target == target and c.tiling == tiling and not c.error]
            if not ok:
                continue
            for label, group in (("light models", [c for c in ok if c.model in LIGHT]), ("all models", ok)):
                if not group:
                    continue
                off_cpu = sum(c.flops * (1 - c.flops_share.get("cpu", 0.0)) for c in group)
                worst = min(group, key=lambda c: 1 - c.flops_share.get("cpu", 0.0))
                geo = math.exp(statistics.mean(math.log(c.planned_us) for c in group))
                lines.append(f"- {target}, tiling {'on' if tiling else 'off'}, {len(group)} {label}: FLOPs off the "
                             f"CPU {off_cpu / max(sum(c.flops for c in group), 1):.1%} (lowest: {worst.model} "
                             f"{1 - worst.flops_share.get('cpu', 0.0):.1%}); geometric mean planned makespan "
                             f"{geo:,.0f} µs; slowest compile {max(c.compile_s or 0 for c in group):.1f} s")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated names (light models without the light_ prefix)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--tiling", choices=("on", "off", "both"), default="on",
                    help="build tiled, untiled, or both side by side in one run")
    ap.add_argument("--time-limit", type=float, default=None, help="CP-SAT budget per build (default: hetc's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = model_paths(args.models.split(",") if args.models else None)
    cases: list[Case] = []
    print(HEADER, flush=True)
    for name, path in models.items():
        for target in args.targets.split(","):
            for tiling in {"on": (True,), "off": (False,), "both": (True, False)}[args.tiling]:
                case = measure(name, path, target, tiling, args.time_limit)
                cases.append(case)
                print(row(case), flush=True)
    print()
    print("\n".join(summary(cases)))
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cases], indent=1))


if __name__ == "__main__":
    main()
