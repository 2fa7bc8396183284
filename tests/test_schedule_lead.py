"""The bounded lead (hetc.schedule.tasks.lead_deps): a copy into a scratchpad waits for the compute whose end
makes room for it, in every strategy's schedule."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hetc.ir import Graph, Node, Value
from hetc.memory.spill import _Edits, _passes_a_waiter
from hetc.schedule import build_problem, schedule
from hetc.schedule.artifact import Task
from hetc.schedule.tasks import TaskSpec, _kahn, earliest_times, lead_deps, lead_window

from test_memory_planner import KIB, make_target


def test_a_copy_waits_for_the_compute_whose_end_makes_room():
    # 4 KiB per reader in 8 KiB: two readers' copies fit together, three do not.
    assert lead_window([4, 4, 4, 4], 8) == [None, None, 0, 1]
    # one reader's copies alone over the budget still overlap nothing: it waits for the compute before it
    assert lead_window([1, 10, 0], 8) == [None, 0, 1]
    # readers with nothing to copy hold nothing ahead
    assert lead_window([4, 0, 0, 4, 4], 8) == [None, None, None, None, 0]


@given(st.lists(st.integers(0, 20), max_size=30), st.integers(1, 40))
def test_the_window_is_the_latest_compute_that_leaves_room(loaded, budget):
    for k, j in enumerate(lead_window(loaded, budget)):
        if j is None:
            assert k == 0 or sum(loaded[:k + 1]) <= budget
        else:
            assert 0 <= j < k and (j == k - 1 or sum(loaded[j + 1:k + 1]) <= budget)
            assert sum(loaded[j:k + 1]) > budget


def _weighted_chain(n: int = 6) -> Graph:
    """n MatMuls (16x256 by a 256x256 weight, 256 KiB each) in a chain: ten times faster on the NPU."""
    x = Value("x", "float32", (16, 256))
    cur, nodes = x, []
    rng = np.random.default_rng(0)
    for i in range(n):
        w = Value(f"w{i}", "float32", (256, 256), const=rng.standard_normal((256, 256)).astype(np.float32))
        out = Value(f"v{i}", "float32", (16, 256))
        nodes.append(Node(i, "MatMul", f"m{i}", [cur, w], [out]))
        cur = out
    return Graph.build("weighted-chain", nodes, [x], [cur], {"": 17})


@pytest.mark.parametrize("strategy", ["heft", "cpsat"])
def test_every_strategy_ships_the_rule(strategy):
    # Six 256 KiB weights on a 900 KiB NPU scratchpad (a third of it holds one MatMul): three load ahead,
    # not all six; every copy the rule makes wait waits in the shipped schedule.
    graph, target = _weighted_chain(), make_target(sram=900 * KIB)
    npu = replace(target.devices["npu"], ops=frozenset({"MatMul"}))
    target = replace(target, devices={**target.devices, "npu": npu}, _cache={})
    shipped = schedule(graph, target, strategy=strategy, time_limit_s=2.0, num_workers=1)
    assert set(shipped.placement.values()) == {"npu"}
    problem = build_problem(graph, target)
    value_index = {v.name: i for i, v in enumerate(problem.values)}
    by_key = {("c", problem.node_ids.index(t.node)) if t.kind == "compute" else
              ("x", value_index[t.value], t.dst): t for t in shipped.tasks}
    key_of = {t.id: k for k, t in by_key.items()}
    specs = {k: TaskSpec(k, t.engine, t.duration_ns, tuple(key_of[d] for d in t.deps)) for k, t in by_key.items()}
    orders: dict = {}
    for k, t in sorted(by_key.items(), key=lambda kv: kv[1].start_ns):
        orders.setdefault(t.engine, []).append(k)
    leads = lead_deps(problem, specs, orders)
    assert leads, "the scratchpad is small enough for the rule to bind"
    for copy, compute in leads.items():
        assert compute in specs[copy].deps
        assert by_key[copy].start_ns >= by_key[compute].end_ns
    assert problem.capacity == {"sram": 900 * KIB}


def test_a_soft_dependency_that_closes_a_cycle_is_dropped():
    # The DMA queue puts copy 1 before copy 0, which compute 2 reads; copy 1 should wait for compute 2.
    tasks = {0: TaskSpec(0, "dma", 1, ()), 1: TaskSpec(1, "dma", 1, ()), 2: TaskSpec(2, "npu", 5, (0,)),
             3: TaskSpec(3, "npu", 5, (1,))}
    orders = {"dma": [1, 0], "npu": [2, 3]}
    times, dropped = _kahn(tasks, orders, 0, {}, {1: 2})
    assert dropped == {1} and times == {1: (0, 1), 0: (1, 2), 2: (2, 7), 3: (7, 12)}
    # in queue order it is kept
    times, dropped = _kahn(tasks, {"dma": [0, 1], "npu": [2, 3]}, 0, {}, {1: 2})
    assert dropped == set() and times[1] == (6, 7) and times[3] == (7, 12)
    with pytest.raises(ValueError):   # a cycle of hard dependencies is still an error
        earliest_times({0: TaskSpec(0, "a", 1, (1,)), 1: TaskSpec(1, "a", 1, ())}, {"a": [0, 1]}, 0)


def test_a_late_transfer_never_lands_behind_a_task_waiting_for_its_reader():
    # copy 0 feeds compute 1 (starts at 50); transfer 3 on the same engine waits for compute 2, after compute 1
    tasks = [Task(0, "transfer", "dma", 0, 10, value="a", src="dram", dst="sram", bytes=10),
             Task(1, "compute", "npu", 50, 60, deps=(0,), node=1, op="Relu"),
             Task(2, "compute", "npu", 60, 70, node=2, op="Relu"),
             Task(3, "transfer", "dma", 75, 85, deps=(2,), value="b", src="sram", dst="dram", bytes=10)]
    edits = _Edits(tasks)
    assert _passes_a_waiter(edits, "dma", 0, 90, 50)        # moved to 90, it would sit behind 3: a cycle
    assert not _passes_a_waiter(edits, "dma", 0, 45, 50)    # still in time: nothing waits in between
