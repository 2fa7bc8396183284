"""Issue 17's MoE goal: a top-2 mixture of 8 experts against a dense model of 2 experts, simulated makespan.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_moe.py
    python tools/bench_moe.py --tokens 1 --targets edge-soc
    python tools/bench_moe.py --tokens 1 --d-model 256 --hidden 1024    # experts of 2 MiB each

Both models are ``tools/make_models.py``'s ``moe`` (the builder of ``models/moe.onnx``: d_model 64, hidden
128 unless given, seeded fan-in-scaled weights) with other token and expert counts: the MoE routes with
Softmax, TopK and OneHot and weights each expert's output by its gate (zero for the experts a token did not
choose), the dense model sums its 2 experts with no router. Each is built with CP-SAT, simulated on seeded
random inputs and validated against onnxruntime. The MoE's experts are predicated (hetc.ir.predicates): the
figure is its expected simulated makespan over the build's seeded inputs (``summary["predicated"]``), beside
the mean over every choice of the router's (``uniform_us``: each timed without data, the other experts
skipped) and the worst case every gate on. The goal is a ratio of at most 1.3: an MoE that computes only the experts its router picks
costs about what its 2 chosen experts cost. With 16 tokens every expert is chosen by some token, so nothing
is skipped there.

The "bound" column is a lower bound on the expected makespan of any schedule of the MoE that reads only the
chosen experts' weights, and the ratio it allows (``routed_bound_ns``): where it is above the goal, the goal
is out of reach on that target.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_models  # noqa: E402

from hetc.api import BuildOptions, BuildResult, build  # noqa: E402
from hetc.schedule.problem import SchedulingProblem, build_problem  # noqa: E402

GOAL = 1.3
MAX_ENUMERATED = 12   # chosen experts' nodes the one-token bound places both ways (2 ** 12 choices)


def routed_bound_ns(routed: BuildResult, tokens: int, experts: int, top_k: int, d_model: int, hidden: int
                    ) -> float:
    """A lower bound on the mean makespan of the MoE over its routings, for any schedule that reads from DRAM
    only the weights of the experts its router picks (issue 17's rule: the experts' weight DMAs run only when
    the router picks them), in the target's cost model (``SchedulingProblem.durations``, DRAM's bandwidth).

    A run picks ``experts * (1 - (1 - top_k / experts) ** tokens)`` distinct experts on average and their
    float32 weights and biases cross DRAM no faster than its bandwidth: where the build computes every expert
    (many tokens), that is the bound. Where it predicates them (a decode step), every run picks at least
    ``top_k`` experts after its router: ``_one_token_bound_ns``."""
    problem = build_problem(routed.graph, routed.target)
    chosen = experts * (1 - (1 - top_k / experts) ** tokens)
    dram_ns = chosen * 4 * (d_model * hidden + hidden + hidden * d_model + d_model) / problem.dram_bandwidth
    return _one_token_bound_ns(routed, problem, top_k) if problem.gates else dram_ns


def _one_token_bound_ns(routed: BuildResult, problem: SchedulingProblem, top_k: int) -> float:
    """The router (``TopKGate``) runs first and the node that sums the experts' outputs last; in between, the
    ``top_k`` chosen experts, each a chain of nodes. Each node runs either on a device that reads DRAM as it
    computes (the CPU) or on one that needs its weights copied in first (an accelerator), and for each such
    choice of every chosen node the run takes at least the longest of: the router, the CPU's nodes and the
    sum one after the other where those run on the CPU alone; each expert's chain, an accelerator node after
    its weights' DRAM time; and every copied weight through DRAM before the last accelerator node starts (or
    every byte read before the sum). The bound is the least over the choices; each node at its fastest device
    of its kind and no synchronisation counted. (The experts are alike: the chosen ones are the first.)"""
    target = routed.target
    ops = {n.id: n for n in routed.graph.nodes}
    streams = {name for name, d in target.devices.items() if d.memory == target.dram}

    def fastest(i: int, on_dram: bool | None = None) -> float:
        return min((ns for d, ns in problem.durations[i].items() if on_dram is None or (d in streams) == on_dram),
                   default=math.inf)

    gated = set(problem.gates)
    router = max(i for i in problem.compute_nodes if ops[problem.node_ids[i]].op_type == "TopKGate")
    combine = next(i for i in problem.compute_nodes if i not in gated and
                   any(problem.values[v].producer in gated for v in problem.node_inputs[i]))
    chains = sorted(sorted(i for i in gated if problem.gates[i] == g) for g in set(problem.gates.values()))[:top_k]
    weights = {i: sum(v.nbytes for v in ops[problem.node_ids[i]].present_inputs if v.is_const)
               / problem.dram_bandwidth for chain in chains for i in chain}
    cpu_only = [problem.candidates(i) for i in (router, combine)]
    serial_host = len(streams) == 1 and all(c == sorted(streams) for c in cpu_only)
    nodes = [i for chain in chains for i in chain]
    if len(nodes) > MAX_ENUMERATED or not all(_is_chain(problem, chain) for chain in chains):
        return fastest(router) + sum(weights.values()) + fastest(combine)   # (tiled experts: the bytes alone)
    ends_ns = fastest(router) + fastest(combine)   # (every chain starts with the router and ends with the sum)
    best = math.inf
    for on_dram in itertools.product((False, True), repeat=len(nodes)):
        placed = dict(zip(nodes, on_dram))
        ends = [ends_ns]
        if serial_host:
            ends.append(ends_ns + sum(fastest(i, True) for i in nodes if placed[i]))
        for chain in chains:
            ends.append(ends_ns + sum(fastest(i, True) if placed[i] else weights[i] + fastest(i, False)
                                      for i in chain))
        copied = [i for i in nodes if not placed[i]]
        if copied:
            ends.append(ends_ns + sum(weights[i] for i in copied) + min(fastest(i, False) for i in copied))
        ends.append(ends_ns + sum(weights.values()))
        best = min(best, max(ends))
    return best


def _is_chain(problem: SchedulingProblem, nodes: list[int]) -> bool:
    """Each node reads the one before it."""
    return all(any(problem.values[v].producer == a for v in problem.node_inputs[b])
               for a, b in zip(nodes, nodes[1:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,16", help="comma-separated token counts (1: a decode step)")
    ap.add_argument("--targets", default="edge-soc,multi-npu")
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=make_models.MOE["d_model"])
    ap.add_argument("--hidden", type=int, default=make_models.MOE["hidden"], help="each expert's hidden width")
    args = ap.parse_args(argv)
    size = dict(d_model=args.d_model, hidden=args.hidden)
    print(f"| tokens | target | MoE {args.experts} experts top-{args.top_k}: expected sim µs (range) | every choice: "
          f"mean (range) | worst case sim µs | dense {args.top_k} experts sim µs | ratio expected / dense (goal <= "
          f"{GOAL}) | bound µs: ratio | validation |\n|---|---|---|---|---|---|---|---|---|")
    for tokens in (int(t) for t in args.tokens.split(",")):
        for target in args.targets.split(","):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # the accelerators' idle warnings of a tiny model
                routed = build(make_models.moe(tokens, args.experts, args.top_k, name=f"moe{args.experts}", **size),
                               BuildOptions(target=target, validate=True))
                dense = build(make_models.moe(tokens, args.top_k, None, name=f"dense{args.top_k}", **size),
                              BuildOptions(target=target, validate=True))
            predicated = routed.summary.get("predicated")
            if predicated is None:   # no expert predicated (nothing to skip): the one simulation is the figure
                expected = worst = routed.sim.makespan_ns / 1000
                spread = every = ""
            else:
                expected, worst = predicated["expected_us"], predicated["worst_case_us"]
                spread = f" ({predicated['min_us']:,.1f}-{predicated['max_us']:,.1f})"
                every = (f"{predicated['uniform_us']:,.1f} ({predicated['uniform_min_us']:,.1f}-"
                         f"{predicated['uniform_max_us']:,.1f})")
            dense_us = dense.sim.makespan_ns / 1000
            bound = routed_bound_ns(routed, tokens, args.experts, args.top_k, **size) / 1000
            verdict = "pass" if routed.validation.passed and dense.validation.passed else "FAIL"
            print(f"| {tokens} | {target} | {expected:,.1f}{spread} | {every or '-'} | {worst:,.1f} | {dense_us:,.1f} "
                  f"| {expected / dense_us:.2f} | {bound:,.1f}: {bound / dense_us:.2f} | {verdict} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
