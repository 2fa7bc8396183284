"""The load-balancing bound (hetc.schedule.bound.balance_bound): a linear program over fractional placements,
below every schedule, and above the older bounds where weights or unlike devices dominate."""
from __future__ import annotations

import pytest

from hetc.schedule.api import solve
from hetc.schedule.bound import (balance_bound, bound_parts, critical_path, lower_bound, release_path,
                                 work_bound)
from hetc.schedule.problem import DmaSpec, SchedulingProblem, ValueSpec

from random_problems import random_problem
from test_schedule import brute_force, tiny_problem


def _independent(weight_bytes: int = 0) -> SchedulingProblem:
    """Four independent nodes, 100 ns on the CPU or 50 ns on the NPU; each may read its own weight."""
    values, inputs = [], []
    for node in range(4):
        if weight_bytes:
            values.append(ValueSpec(f"w{node}", weight_bytes, None, (node,), is_const=True))
            inputs.append((len(values) - 1,))
        else:
            inputs.append(())
        values.append(ValueSpec(f"y{node}", 64, node, (), is_output=True))
    return SchedulingProblem(
        node_ids=(0, 1, 2, 3), node_names=tuple("abcd"), ops=("Relu",) * 4,
        durations=tuple({"cpu": 100, "npu": 50} for _ in range(4)), node_inputs=tuple(inputs),
        values=tuple(values), device_memory={"cpu": "dram", "npu": "sram"},
        dmas={"dma": DmaSpec("dma", ("dram", "sram"), 0.0, 1.0)}, sync_ns=0, priority=("npu", "cpu"))


def test_unlike_devices_share_the_work_by_speed():
    # the NPU takes 8/3 nodes' worth (133 ns), the CPU 4/3 (133 ns): above the older bounds
    problem = _independent()
    assert balance_bound(problem) == 133
    assert work_bound(problem) == 100 and critical_path(problem) == 50
    assert lower_bound(problem) == max(133, release_path(problem))
    assert lower_bound(problem) <= solve(problem, "cpsat", time_limit_s=2).makespan_ns


def test_weights_an_accelerator_reads_keep_its_dma_busy():
    # 100-byte weights at 1 B/ns: each node the NPU runs costs its DMA 100 ns, so the NPU can take less
    problem = _independent(weight_bytes=100)
    bound = balance_bound(problem)
    assert bound == 200 and bound > balance_bound(_independent())   # x on the NPU: 100 x <= T, 100 (4 - x) <= T
    assert bound <= solve(problem, "cpsat", time_limit_s=2).makespan_ns


@pytest.mark.parametrize("seed", range(6))
def test_no_bound_is_above_the_optimum(seed):
    problem = tiny_problem(seed)
    optimum = brute_force(problem)
    for name, ns in bound_parts(problem).items():   # the load balance and the stages between cuts among them
        assert ns <= optimum, name


@pytest.mark.parametrize("seed", range(10))
def test_never_above_any_strategy_on_random_problems(seed):
    problem = random_problem(seed, nodes=30, two_npu_dmas=seed % 2 == 1)
    bound = balance_bound(problem)
    assert bound >= 0 and max(critical_path(problem), release_path(problem)) <= lower_bound(problem)
    for strategy in ("heft", "greedy", "cpsat"):
        assert bound <= solve(problem, strategy, time_limit_s=1).makespan_ns, strategy


def _across(a_on_cpu_too: bool = False) -> SchedulingProblem:
    """``a`` (the NPU, 100 ns; optionally the CPU, 400 ns) reads a 64-byte input and makes a 1000-byte ``h``
    that ``b`` (the CPU only, 100 ns) reads: a copy at 10 ns + 1 B/ns, a semaphore (7 ns) at each hand-over."""
    values = (ValueSpec("x", 64, None, (0,)), ValueSpec("h", 1000, 0, (1,)), ValueSpec("y", 8, 1, (), is_output=True))
    return SchedulingProblem(
        node_ids=(0, 1), node_names=("a", "b"), ops=("Relu", "Relu"),
        durations=({"npu": 100, **({"cpu": 400} if a_on_cpu_too else {})}, {"cpu": 100}),
        node_inputs=((0,), (1,)), values=values, device_memory={"cpu": "dram", "npu": "sram"},
        dmas={"dma": DmaSpec("dma", ("dram", "sram"), 10.0, 1.0)}, sync_ns=7, priority=("npu", "cpu"))


def test_an_activation_crossing_devices_pays_its_copy_and_semaphores():
    # x in: 7 + 74; a: 100; h out: 7 + 1010; b: 7 + 100
    problem = _across()
    assert release_path(problem) == 81 + 100 + 1017 + 107 == brute_force(problem)
    assert solve(problem, "cpsat", time_limit_s=2).makespan_ns == release_path(problem)


def test_the_producer_is_where_its_value_arrives_soonest():
    # a on the CPU beside b (400 + 100 ns: no copy, no semaphore) beats the NPU's 1305 ns: the bound follows it
    problem = _across(a_on_cpu_too=True)
    assert release_path(problem) == 400 + 100 == brute_force(problem)


@pytest.mark.parametrize("seed", range(12))
def test_the_path_with_transfers_never_above_any_strategy(seed):
    problem = random_problem(seed, nodes=20, edge_prob=0.2 + 0.02 * seed, two_npu_dmas=seed % 2 == 1,
                             direct_link=seed % 3 == 0)
    bound = release_path(problem)
    for strategy in ("heft", "greedy"):
        assert bound <= solve(problem, strategy).makespan_ns, strategy


def test_cpsat_does_not_search_where_heft_meets_the_bound():
    sched = solve(_across(), "cpsat", time_limit_s=2)
    assert sched.makespan_ns == release_path(_across()) and sched.stats.status == "OPTIMAL"
    assert sched.stats.details["no_search"] == "HEFT meets the lower bound" and sched.gap == 0.0
