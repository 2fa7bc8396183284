"""The Llama-style decoder pair on each target: placement, the nodes left on the CPU and why, makespans,
validation, and for the decode step the DMA bytes against the compulsory bytes.

Compulsory bytes of a decode step (issue 17): every weight once, the new K/V rows once (written out), the
cache rows once (read). DMA bytes are the schedule's transfers, split by what they move: weights (and other
constants), the past cache (graph inputs past_*), the present cache (graph outputs present_*, today a copy
of past plus the new row: Concat(past, new)), and activations.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_llm.py [--targets edge-soc ...] [--no-validate]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hetc.api import build  # noqa: E402
from hetc.pipeline import BuildOptions  # noqa: E402
from hetc.schedule import placement_rows  # noqa: E402
from hetc.sim import simulate  # noqa: E402

MODELS = REPO / "models"
TARGETS = ("edge-soc", "cpu-only", "multi-npu")


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3f} MiB"


def dma_split(result) -> tuple[Counter, dict[str, int]]:
    """Transfer bytes by kind, and the compulsory bytes of a decode step."""
    graph, schedule = result.graph, result.plan.schedule
    values = graph.values
    inputs = {v.name for v in graph.inputs}
    outputs = {v.name for v in graph.outputs}
    moved: Counter = Counter()
    for task in schedule.tasks:
        if task.kind != "transfer":
            continue
        v = values.get(task.value)
        kind = ("weights" if v is not None and v.is_const else "past cache" if task.value in inputs and
                task.value.startswith("past_") else "present cache" if task.value in outputs and
                task.value.startswith("present_") else "other inputs/outputs" if task.value in inputs | outputs
                else "activations")
        moved[kind] += task.bytes
    past = [v for v in graph.inputs if v.name.startswith("past_")]
    new_rows = sum(v.nbytes // v.shape[2] for v in past)   # one row per cache: [1, kv_heads, 1, head_dim]
    compulsory = {"weights": sum(v.nbytes for v in values.values() if v.is_const),
                  "new KV rows": new_rows, "cache rows read": sum(v.nbytes for v in past)}
    return moved, compulsory


def run(graph_name: str, target: str, validate: bool) -> None:
    result = build(MODELS / f"llama_{graph_name}.onnx", BuildOptions(target=target, validate=validate))
    summary = result.summary
    sim = simulate(result.bundle, functional=False)
    print(f"## llama_{graph_name} on {target}: {summary['nodes']} nodes {summary['placement']}, planned "
          f"{summary['makespan_us']:.1f} us, simulated {sim.makespan_ns / 1000:.1f} us"
          + (f", validation {'passed' if result.validation.passed else 'FAILED'}" if validate else ""))
    rows = placement_rows(result.graph, result.target, result.plan.schedule)
    for row in rows:
        if row["device"] == "cpu" and target != "cpu-only":
            print(f"  on the CPU: {row['name']} {row['op']}: {row['reason'] or row['refused']}")
    if graph_name == "decode":
        moved, compulsory = dma_split(result)
        total, floor = sum(moved.values()), sum(compulsory.values())
        print(f"  DMA per step {_mib(total)} = " + ", ".join(f"{k} {_mib(b)}" for k, b in moved.most_common()))
        print(f"  compulsory {_mib(floor)} = " + ", ".join(f"{k} {_mib(b)}" for k, b in compulsory.items())
              + f"; ratio {total / floor:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--graphs", nargs="*", default=["prefill", "decode"])
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args(argv)
    for graph_name in args.graphs:
        for target in args.targets:
            run(graph_name, target, not args.no_validate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
