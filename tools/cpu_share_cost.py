"""What keeping the CPU off accelerator work costs: issue 14 asks for 95% of the FLOPs off the CPU and for speed.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/cpu_share_cost.py --target edge-soc

Per light model (lowered and tiled as ``hetc build`` does): HEFT's makespan (timed, before memory planning) and
its share of FLOPs off the CPU, once as scheduled and once with the CPU removed from the candidates of every
node an accelerator can run (the CPU keeps only what no accelerator takes). Printed: both per model, the
geometric mean of the makespan ratio and the FLOPs-weighted share off the CPU over the models.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hetc.schedule.heuristics import heft_timed  # noqa: E402
from hetc.schedule.problem import build_problem  # noqa: E402
from hetc.target import load_target  # noqa: E402
from hetc.target.flops import node_flops  # noqa: E402
from speedup_bound import LIGHT, MODELS, scheduled_graph  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="edge-soc")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    target = load_target(args.target)
    accelerators = {d for d, dev in target.devices.items() if dev.kind != "cpu"}
    ratios, flops, off = [], 0, [0, 0]
    print("| model | HEFT ms | FLOPs off CPU | CPU kept off: HEFT ms | FLOPs off CPU |\n|---|---:|---:|---:|---:|")
    for model in args.models:
        tiled = scheduled_graph(LIGHT / f"light_{model}.onnx", target)
        problem = build_problem(tiled, target)
        nodes = tiled.node_map()
        work = [0 if problem.is_alias(k) else node_flops(nodes[i]) for k, i in enumerate(problem.node_ids)]
        kept_off = replace(problem, _memo={}, durations=tuple(
            {d: ns for d, ns in durs.items() if d in accelerators} if accelerators & set(durs) else durs
            for durs in problem.durations))
        row = []
        for k, variant in enumerate((problem, kept_off)):
            plan, makespan = heft_timed(variant)
            share = sum(f for n, f in enumerate(work) if plan.placement[n] in accelerators)
            off[k] += share
            row.append((makespan, share / max(1, sum(work))))
        flops += sum(work)
        ratios.append(row[1][0] / row[0][0])
        print(f"| {model} | {row[0][0] / 1e6:.2f} | {row[0][1]:.1%} | {row[1][0] / 1e6:.2f} | {row[1][1]:.1%} |",
              flush=True)
    mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"\ngeometric mean makespan, CPU kept off / as scheduled: {mean:.3f}; FLOPs off the CPU "
          f"{off[0] / flops:.1%} -> {off[1] / flops:.1%}")


if __name__ == "__main__":
    main()
