"""Capacity repairs that keep the planner fast on small scratchpads: waiting for bytes to free instead of
moving a node, and repairing every crowded stretch of a memory in one round."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from hetc.ir import Graph, Node, Value
from hetc.memory import plan_memory
from hetc.memory.delay import delay_at
from hetc.memory.aliasing import resolve_aliases
from hetc.memory.lifetimes import build_table
from hetc.memory.layout import group_storages, live_overflow
from hetc.planning import _overflow_note
from test_memory_planner import KIB, list_schedule, make_target
from test_memory_spill import _fast_dma


def _export_while_computing() -> Graph:
    """a = Softmax(x) is a graph output, copied out to DRAM while b = Softmax(x) runs next to it."""
    x, a, b, c = (Value(n, "float32", (1, 1024)) for n in "xabc")     # 4 KiB each
    nodes = [Node(0, "Softmax", "first", [x], [a]), Node(1, "Softmax", "second", [x], [b]),
             Node(2, "Softmax", "third", [b], [c])]
    return Graph.build("export", nodes, [x], [a, c], {"": 17})


def test_a_task_waits_for_an_export_to_free_bytes_instead_of_moving():
    graph = _export_while_computing()
    target = make_target(sram=10 * KIB)          # x, a (being exported) and b together need 12 KiB
    schedule = list_schedule(graph, target, {n.id: "npu" for n in graph})
    export = next(t for t in schedule.tasks if t.kind == "transfer" and t.value == "a")
    second = next(t for t in schedule.tasks if t.node == 1)
    assert second.start_ns < export.end_ns        # the list schedule overlaps them: 12 KiB live at once

    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    assert plan.details["moved_nodes"] == [] and plan.spills == ()
    assert plan.details["delayed_tasks"] == [{"task": second.id, "after": export.id, "freed_bytes": 4 * KIB}]
    waited = plan.schedule.task(second.id)
    assert export.id in waited.deps and waited.start_ns >= plan.schedule.task(export.id).end_ns
    assert plan.stats["sram"].peak_bytes <= 10 * KIB


def test_the_plan_says_how_far_the_schedule_was_from_fitting():
    graph = _export_while_computing()
    crowded = plan_memory(graph, list_schedule(graph, make_target(sram=10 * KIB), {n.id: "npu" for n in graph}),
                          make_target(sram=10 * KIB))
    sram = crowded.stats["sram"]   # x, a (being exported) and b: 12 KiB as scheduled, repaired to fit
    assert sram.scheduled_live_bytes == 12 * KIB > sram.capacity_bytes >= sram.lower_bound_bytes
    assert crowded.stats["dram"].scheduled_live_bytes is None
    roomy = plan_memory(graph, list_schedule(graph, make_target(sram=16 * KIB), {n.id: "npu" for n in graph}),
                        make_target(sram=16 * KIB))
    assert roomy.stats["sram"].scheduled_live_bytes == roomy.stats["sram"].lower_bound_bytes == 12 * KIB
    # the memory stage's progress line says it where the repairs made it fit
    assert _overflow_note(crowded) == "; as scheduled it needed sram 0.01/0.01 MiB" and _overflow_note(roomy) == ""


def test_delay_needs_a_running_task_that_frees_bytes():
    graph = _export_while_computing()
    target = make_target(sram=10 * KIB)
    schedule = list_schedule(graph, target, {n.id: "npu" for n in graph})
    table = build_table(graph, schedule, target)
    first = next(t for t in schedule.tasks if t.node == 0)
    # while the first node runs, nothing else does: no other task can free bytes for it
    assert delay_at(table, schedule, target, "sram", first.start_ns, table.lifetimes(schedule), {}) is None


def test_every_crowded_stretch_is_repaired_in_one_round():
    # Sigmoid/Mul chain (in place, one activation live) with a 4 KiB weight per Mul. w1 and w3 arrive together
    # at the start, w6 and w8 together in the middle: two separate stretches with three buffers in 8 KiB.
    x = Value("x", "float32", (1, 1024))
    cur, nodes = x, []
    for i in range(9):
        inputs = [cur]
        if i in (1, 3, 6, 8):
            inputs.append(Value(f"w{i}", "float32", (1, 1024), const=np.full((1, 1024), i, np.float32)))
        out = Value(f"v{i}", "float32", (1, 1024))
        nodes.append(Node(i, "Mul" if len(inputs) == 2 else "Sigmoid", f"n{i}", inputs, [out]))
        cur = out
    graph = Graph.build("two-stretches", nodes, [x], [cur], {"": 17})
    target = _fast_dma(make_target(sram=8 * KIB))
    # scheduled for a scratchpad too large to bound the lead (hetc.schedule.tasks.lead_deps), then crowded
    schedule = list_schedule(graph, _fast_dma(make_target(sram=1024 * KIB)), {n.id: "npu" for n in nodes})
    middle = next(t for t in schedule.tasks if t.node == 4).start_ns
    late = {"w6": 0, "w8": 41}              # the list schedule fetches all four up front; fetch two later
    schedule = schedule.with_tasks(tuple(
        replace(t, start_ns=middle + late[t.value], end_ns=middle + late[t.value] + t.duration_ns)
        if t.value in late else t for t in schedule.tasks))
    table = build_table(graph, schedule, target)
    storages = group_storages(table, table.lifetimes(schedule), resolve_aliases(table, schedule, graph.node_map()))
    assert len(live_overflow(storages, target, {})[1]) == 2

    plan = plan_memory(graph, schedule, target, double_buffer=False)   # the repairs alone
    plan.verify(target)
    fetch = {t.value: t.id for t in schedule.tasks if t.kind == "transfer"}
    assert plan.details["postponed_transfers"] == [fetch["w3"], fetch["w8"]]
    assert plan.details["spill_rounds"] == 1 and plan.spills == () and plan.details["moved_nodes"] == []
