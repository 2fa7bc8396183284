"""Scheduling on random graphs and random problems: invariants, bounds, optimality, determinism, errors."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetc.errors import ScheduleError
from hetc.ir import Graph, Node, Value
from hetc.schedule import (Schedule, ScheduleInvariantError, build_problem, lower_bound, placement_rows, schedule,
                           solve)
from hetc.schedule.artifact import Task
from hetc.schedule.heuristics import fixed_placement, heft, heft_list, heft_timed
from hetc.schedule.problem import DmaSpec, SchedulingProblem, ValueSpec
from hetc.schedule.tasks import Plan, asap, derive_tasks, handoff_ns, makespan_of, time_plan
from hetc.target import load_target

from random_problems import random_problem

EDGE = load_target("edge-soc")
MULTI = load_target("multi-npu")
FAST = dict(time_limit_s=1.0)
# Mish is outside the NPU/DSP kernel set: the CPU must run it.
OPS = ["Relu", "Add", "Mul", "Sigmoid", "MatMul", "Mish"]


def random_graph(draw: st.DrawFn) -> Graph:
    """A random DAG of elementwise ops and MatMuls with weights on [1, c, c] float32 tensors."""
    c = draw(st.sampled_from([16, 64, 128]))
    x = Value("x", "float32", (1, c, c))
    pool, nodes = [x], []
    for i in range(draw(st.integers(1, 9))):
        op = draw(st.sampled_from(OPS))
        a = draw(st.sampled_from(pool))
        if op in ("Add", "Mul"):
            inputs = [a, draw(st.sampled_from(pool))]
        elif op == "MatMul":
            inputs = [a, Value(f"w{i}", "float32", (c, c), const=np.zeros((c, c), np.float32))]
        else:
            inputs = [a]
        out = Value(f"v{i}", "float32", (1, c, c))
        nodes.append(Node(i, op, f"n{i}", inputs, [out]))
        pool.append(out)
    used = {v.name for n in nodes for v in n.inputs}
    outputs = [v for v in pool[1:] if v.name not in used] or [pool[-1]]
    return Graph.build("random", nodes, [x], outputs, {"": 17})


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    return random_graph(draw)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=graphs(), target=st.sampled_from([EDGE, MULTI]))
def test_every_strategy_verifies_on_random_graphs(graph: Graph, target) -> None:
    runs = {s: schedule(graph, target, s, time_limit_s=0.3) for s in ("heft", "greedy", "single:cpu", "cpsat")}
    for strategy, sched in runs.items():
        sched.verify(graph, target)
        assert sched.lower_bound_ns <= sched.makespan_ns, strategy
        assert set(sched.placement) == {n.id for n in graph.nodes}
    assert runs["cpsat"].makespan_ns <= runs["heft"].makespan_ns


@pytest.mark.parametrize("seed", range(4))
def test_random_problems_lower_bound_and_cpsat_never_worse_than_heft(seed: int) -> None:
    problem = random_problem(seed, nodes=14, two_npu_dmas=seed % 2 == 0, direct_link=seed % 3 == 0)
    results = {s: solve(problem, s, time_limit_s=0.5) for s in ("heft", "greedy", "single:cpu", "cpsat")}
    bound = lower_bound(problem)
    for sched in results.values():
        assert bound <= sched.makespan_ns
        _check_lanes(sched)
    assert results["cpsat"].makespan_ns <= results["heft"].makespan_ns
    assert results["cpsat"].makespan_ns <= results["single:cpu"].makespan_ns


@pytest.mark.parametrize("seed", range(6))
def test_heft_is_its_list_schedule_or_the_whole_graph_on_one_device_whichever_is_shorter(seed: int) -> None:
    """Devices whose compute alone outlasts the best so far are not scheduled: the answer is the same."""
    problem = random_problem(seed, nodes=14)
    spans = [makespan_of(time_plan(problem, heft_list(problem))[1])]
    spans += [makespan_of(time_plan(problem, fixed_placement(problem, [d] * problem.n))[1]) for d in problem.devices
              if all(d in problem.durations[i] for i in problem.compute_nodes)]
    assert len(spans) > 1
    plan, span = heft_timed(problem)
    assert span == min(spans) == makespan_of(time_plan(problem, plan)[1])


def test_a_limit_that_heft_and_model_building_take_whole_ships_heft_without_a_search() -> None:
    problem = random_problem(1, nodes=80)
    sched = solve(problem, "cpsat", time_limit_s=0.2)
    assert sched.stats.status == "HINT" and sched.stats.details["windows"] == 0
    assert "no CP-SAT search" in sched.stats.details["no_search"] and "a limit of" in sched.stats.details["no_search"]
    assert sched.makespan_ns == solve(problem, "heft").makespan_ns
    searched = solve(problem, "cpsat", time_limit_s=4)
    assert searched.stats.details["windows"] >= 1 and "no_search" not in searched.stats.details


def _check_lanes(sched: Schedule) -> None:
    """Precedence (+ sync) and exclusivity, checked on the artifact alone."""
    by_id = {t.id: t for t in sched.tasks}
    for t in sched.tasks:
        for d in t.deps:
            gap = 0 if by_id[d].engine == t.engine else 50
            assert t.start_ns >= by_id[d].end_ns + gap
    for lane in sched.engine_tasks().values():
        for a, b in zip(lane, lane[1:]):
            assert b.start_ns >= a.end_ns


# ---------------------------------------------------------------------------------------------- optimality
def tiny_problem(seed: int) -> SchedulingProblem:
    """Four nodes, two devices, small ns durations so one tick is one ns and CP-SAT solves the exact problem."""
    import random
    rng = random.Random(seed)
    values = [ValueSpec("in", 64 * rng.randint(1, 8), None, (0,))]
    node_inputs, durations = [(0,)], []
    edges = {1: [0], 2: [0], 3: [1, 2]} if seed % 2 else {1: [0], 2: [1], 3: [1]}
    for node in range(4):
        durations.append({"cpu": rng.randint(40, 200), **({"npu": rng.randint(5, 60)} if rng.random() < 0.8 else {})})
    producers = {}
    for node in range(4):
        producers[node] = len(values)
        consumers = tuple(j for j, ps in edges.items() if node in ps)
        values.append(ValueSpec(f"v{node}", 64 * rng.randint(1, 8), node, consumers, is_output=not consumers))
    node_inputs = [(0,)] + [tuple(producers[p] for p in edges[j]) for j in (1, 2, 3)]
    values[0] = ValueSpec("in", values[0].nbytes, None, (0,))
    return SchedulingProblem(
        node_ids=(0, 1, 2, 3), node_names=("a", "b", "c", "d"), ops=("Relu",) * 4, durations=tuple(durations),
        node_inputs=tuple(node_inputs), values=tuple(values), device_memory={"cpu": "dram", "npu": "sram"},
        dmas={"dma": DmaSpec("dma", ("dram", "sram"), 10.0, 16.0)}, sync_ns=7, priority=("npu", "cpu"))


def brute_force(problem: SchedulingProblem) -> int:
    """Optimal makespan: every placement, every order of every engine, ASAP-timed."""
    best = None
    for placement in itertools.product(*(problem.candidates(i) for i in range(problem.n))):
        tasks = derive_tasks(problem, placement, {})
        lanes: dict[str, list] = {}
        for key, spec in tasks.items():
            lanes.setdefault(spec.engine, []).append(key)
        engines = list(lanes)
        for perms in itertools.product(*(itertools.permutations(lanes[e]) for e in engines)):
            try:
                times = asap(problem, tasks, {e: list(p) for e, p in zip(engines, perms)})
            except ValueError:
                continue  # this order contradicts a data dependency
            span = makespan_of(times)
            best = span if best is None else min(best, span)
    return best


@pytest.mark.parametrize("strategy", ["heft", "cpsat"])
def test_a_dependency_costs_a_semaphore_only_across_engines(strategy: str) -> None:
    """``handoff_ns`` is the one statement of what a dependency costs, and every schedule keeps to it: a task
    waiting for one on its own engine may start at its end, for one on another engine a semaphore later."""
    assert (handoff_ns("npu", "npu", 7), handoff_ns("npu", "dma", 7), handoff_ns(None, "dma", 7)) == (0, 7, 0)
    problem = random_problem(2, nodes=12, two_npu_dmas=True)
    sched = solve(problem, strategy, time_limit_s=2.0)
    tasks = sched.by_id()
    tight = set()
    for t in sched.tasks:
        for d in t.deps:
            gap = t.start_ns - tasks[d].end_ns
            assert gap >= handoff_ns(tasks[d].engine, t.engine, problem.sync_ns), (d, t.id)
            if gap == handoff_ns(tasks[d].engine, t.engine, problem.sync_ns):
                tight.add(tasks[d].engine == t.engine)
    assert problem.sync_ns > 0 and tight == {True, False}   # both kinds bind somewhere


@pytest.mark.parametrize("seed", range(6))
def test_cpsat_is_optimal_on_tiny_problems(seed: int) -> None:
    problem = tiny_problem(seed)
    sched = solve(problem, "cpsat", time_limit_s=5.0)
    optimum = brute_force(problem)
    assert sched.stats.tick_ns == 1
    assert sched.makespan_ns == optimum
    assert sched.stats.status == "OPTIMAL" and sched.lower_bound_ns == optimum


def test_cpsat_is_deterministic() -> None:
    problem = random_problem(3, nodes=80, two_npu_dmas=True)  # two windows, searches stopped by their budget
    first = solve(problem, "cpsat", time_limit_s=1.0)
    second = solve(problem, "cpsat", time_limit_s=1.0)
    assert first.stats.details["windows"] == 2
    assert first.tasks == second.tasks and first.placement == second.placement


def test_windows_cover_large_graphs() -> None:
    """A graph bigger than one window is solved in windows and still re-timed exactly."""
    problem = random_problem(5, nodes=130, edge_prob=0.05)
    sched = solve(problem, "cpsat", time_limit_s=1.0)
    assert sched.stats.details["windows"] == 3
    assert sched.makespan_ns <= solve(problem, "heft").makespan_ns
    _check_lanes(sched)


# ---------------------------------------------------------------------------------------------- artifact
def small_graph() -> Graph:
    c = 64
    x = Value("x", "float32", (1, c, c))
    w = Value("w", "float32", (c, c), const=np.zeros((c, c), np.float32))
    a, b, y = (Value(n, "float32", (1, c, c)) for n in ("a", "b", "y"))
    nodes = [Node(0, "MatMul", "mm", [x, w], [a]), Node(1, "Mish", "mish", [a], [b]),
             Node(2, "Add", "add", [a, b], [y])]
    return Graph.build("small", nodes, [x], [y], {"": 17})


def test_json_round_trip_and_utilisation() -> None:
    graph = small_graph()
    sched = schedule(graph, EDGE, "cpsat", **FAST)
    again = Schedule.from_json(json.loads(sched.dumps()))
    assert again.tasks == sched.tasks and again.placement == sched.placement and again.stats == sched.stats
    again.verify(graph, EDGE)
    util = sched.utilisation()
    assert all(0 < u <= 1 for u in util.values())
    doc = sched.to_json()
    assert {"id", "kind", "engine", "start_us", "end_us", "deps"} <= set(doc["tasks"][0])


def test_weights_are_transferred_to_scratchpads() -> None:
    graph = small_graph()
    sched = schedule(graph, EDGE, "single:cpu")
    assert all(t.kind == "compute" for t in sched.tasks)
    sched = schedule(graph, EDGE, "greedy")  # MatMul goes to the NPU: its weight must be copied there
    assert sched.placement[0] == "npu"
    assert any(t.kind == "transfer" and t.value == "w" and t.dst == "npu_sram" for t in sched.tasks)
    sched.verify(graph, EDGE)


def test_verify_reports_broken_schedules() -> None:
    graph = small_graph()
    sched = schedule(graph, EDGE, "greedy")
    late = max(sched.tasks, key=lambda t: t.start_ns)
    early = Task(**{**late.__dict__, "start_ns": 0, "end_ns": late.duration_ns})
    with pytest.raises(ScheduleInvariantError, match="before its dependency"):
        sched.with_tasks(tuple(early if t.id == late.id else t for t in sched.tasks)).verify(graph, EDGE)
    no_copies = tuple(t for t in sched.tasks if t.kind == "compute")
    with pytest.raises(ScheduleInvariantError, match="resident"):
        sched.with_tasks(no_copies).verify(graph, EDGE)
    assert isinstance(ScheduleInvariantError(["x"]), AssertionError)


def test_placement_rows_explain_fallbacks() -> None:
    graph = small_graph()
    rows = placement_rows(graph, EDGE, schedule(graph, EDGE, "single:cpu"))
    assert [r["node"] for r in rows] == [0, 1, 2]
    mish = rows[1]
    assert mish["device"] == "cpu" and "Mish" in mish["refused"] and mish["reason"] == ""
    matmul = rows[0]
    assert matmul["fastest"] != "cpu" and "single:cpu" in matmul["reason"] and "faster" in matmul["reason"]


def test_user_errors_name_the_choices() -> None:
    graph = small_graph()
    with pytest.raises(ScheduleError, match="heft"):
        schedule(graph, EDGE, "fastest")
    with pytest.raises(ScheduleError, match="single:npu"):
        schedule(graph, EDGE, "single:gpu")
    with pytest.raises(ScheduleError, match=r"'mish' \(Mish\) cannot run on 'npu'.*Mish"):
        schedule(graph, EDGE, "single:npu")


def test_problem_matches_the_target() -> None:
    graph = small_graph()
    problem = build_problem(graph, EDGE)
    assert problem.candidates(1) == ["cpu"]
    assert problem.durations[0]["npu"] < problem.durations[0]["cpu"]
    assert [v.name for v in problem.values if v.is_const] == ["w"]
    plan = heft(problem)
    assert isinstance(plan, Plan) and len(plan.placement) == 3
