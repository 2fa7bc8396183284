"""The stages between a graph's cut nodes (hetc.schedule.bound.series_bound): each stage runs in a window of its
own, so the stages' bounds add up, above the whole graph's critical path and load-balancing program."""
from __future__ import annotations

import random

import pytest

from hetc.schedule.api import solve
from hetc.schedule.bound import (balance_bound, bound_parts, critical_path, cut_nodes, lower_bound, release_path,
                                 series_bound)
from hetc.schedule.problem import DmaSpec, SchedulingProblem, ValueSpec

from random_problems import random_problem


def _chain_then_fan() -> SchedulingProblem:
    """a1 -> a2 (100 ns on the NPU, 300 on the CPU), then j (1 ns), then four independent b's (100 ns on
    either device). The chain leaves the CPU idle and the fan needs both devices: 200 + 1 + 200 ns."""
    durations = ({"npu": 100, "cpu": 300},) * 2 + ({"npu": 1, "cpu": 1},) + ({"npu": 100, "cpu": 100},) * 4
    values = [ValueSpec("x", 64, None, (0,)), ValueSpec("h1", 64, 0, (1,)), ValueSpec("h2", 64, 1, (2,)),
              ValueSpec("j", 64, 2, (3, 4, 5, 6))]
    values += [ValueSpec(f"y{k}", 64, 3 + k, (), is_output=True) for k in range(4)]
    return SchedulingProblem(
        node_ids=tuple(range(7)), node_names=("a1", "a2", "j", "b1", "b2", "b3", "b4"),
        ops=("Relu",) * 7, durations=durations, node_inputs=((0,), (1,), (2,), (3,), (3,), (3,), (3,)),
        values=tuple(values), device_memory={"cpu": "dram", "npu": "sram"},
        dmas={"dma": DmaSpec("dma", ("dram", "sram"), 0.0, 1000.0)}, sync_ns=0, priority=("npu", "cpu"))


def test_stages_add_up_above_the_whole_graphs_bounds():
    problem = _chain_then_fan()
    assert series_bound(problem) == 200 + 1 + 200
    # the whole graph: the path a1 a2 j b is 301 ns, the program spreads the b's under the chain (300.5 ns)
    assert critical_path(problem) == 301 and balance_bound(problem) <= 301
    assert lower_bound(problem) == 401 == bound_parts(problem)["stages between cuts"]
    for strategy in ("heft", "greedy", "cpsat"):
        assert solve(problem, strategy, time_limit_s=1).makespan_ns >= 401, strategy


def test_one_stage_is_the_larger_of_its_path_and_its_program():
    # no node but the first and last is ordered with all others: the middle is one window from 0
    problem = random_problem(3, nodes=14, edge_prob=0.6)
    bound = series_bound(problem)
    assert bound >= critical_path(problem)
    assert bound <= lower_bound(problem)


@pytest.mark.parametrize("seed", range(12))
def test_never_above_any_strategy_on_sparse_random_problems(seed):
    # sparse DAGs have many cut nodes: chains of small fans
    problem = random_problem(seed, nodes=24, edge_prob=0.08, two_npu_dmas=seed % 2 == 1)
    bound = series_bound(problem)
    assert max(critical_path(problem), release_path(problem)) <= lower_bound(problem)
    for strategy in ("heft", "greedy", "cpsat"):
        assert bound <= solve(problem, strategy, time_limit_s=1).makespan_ns, strategy


def _blocks(seed: int, blocks: int = 4) -> SchedulingProblem:
    """Random stages joined by cut nodes: each stage a fan of independent nodes or a chain, on a CPU and an
    NPU (some nodes CPU-only), every node reading its stage's entry; the joins are short CPU-or-NPU nodes."""
    rng = random.Random(seed)
    durations, inputs, names = [], [], []
    values = [ValueSpec("x", 256, None, ())]
    entry = 0                       # the value a stage's nodes read

    def add(node_durations: dict, reads: tuple[int, ...]) -> int:
        node = len(durations)
        durations.append(node_durations)
        inputs.append(reads)
        names.append(f"n{node}")
        values.append(ValueSpec(f"v{node}", rng.randint(1, 8) * 64, node, ()))
        return len(values) - 1

    for _ in range(blocks):
        width = rng.randint(2, 5)
        cpu = [rng.randint(200, 2000) for _ in range(width)]
        spec = [{"cpu": c, **({"npu": c // rng.randint(2, 6)} if rng.random() < 0.8 else {})} for c in cpu]
        if rng.random() < 0.5:                      # a fan: every node reads the entry
            outs = [add(d, (entry,)) for d in spec]
        else:                                       # a chain
            outs, last = [], entry
            for d in spec:
                last = add(d, (last,))
            outs = [last]
        entry = add({"cpu": rng.randint(5, 50), "npu": rng.randint(2, 20)}, tuple(outs))
    consumers: dict[int, list[int]] = {}
    for node, reads in enumerate(inputs):
        for v in reads:
            consumers.setdefault(v, []).append(node)
    values = [ValueSpec(v.name, v.nbytes, v.producer, tuple(consumers.get(k, ())),
                        is_output=v.producer is not None and k not in consumers) for k, v in enumerate(values)]
    return SchedulingProblem(
        node_ids=tuple(range(len(durations))), node_names=tuple(names), ops=("Relu",) * len(durations),
        durations=tuple(durations), node_inputs=tuple(inputs), values=tuple(values),
        device_memory={"cpu": "dram", "npu": "sram"}, dmas={"dma": DmaSpec("dma", ("dram", "sram"), 50.0, 8.0)},
        sync_ns=20, priority=("npu", "cpu"))


@pytest.mark.parametrize("seed", range(10))
def test_never_above_any_strategy_on_random_stages(seed):
    problem = _blocks(seed)
    bound = series_bound(problem)
    for strategy in ("heft", "greedy", "cpsat"):
        assert bound <= solve(problem, strategy, time_limit_s=1).makespan_ns, strategy


def test_it_lifts_the_bound_on_most_random_stages():
    # not a vacuous property above: where fans and chains alternate, the stages beat every other bound
    lifted = 0
    for seed in range(10):
        parts = bound_parts(_blocks(seed))
        lifted += parts["stages between cuts"] > max(v for k, v in parts.items() if k != "stages between cuts")
    assert lifted >= 5


@pytest.mark.parametrize("seed", range(20))
def test_cut_nodes_are_the_nodes_ordered_with_every_other(seed):
    # the linear-time count against the definition, on DAGs from chains to dense ones
    problem = random_problem(seed, nodes=6 + seed, edge_prob=0.05 * (1 + seed % 8))
    n, reach = problem.n, []
    for node in range(n):            # ancestors of each node, by walking the predecessors
        seen, stack = set(), list(problem.predecessors[node])
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(problem.predecessors[p])
        reach.append(seen)
    ordered = [v for v in range(n) if all(u == v or u in reach[v] or v in reach[u] for u in range(n))]
    assert cut_nodes(problem) == ordered
