"""Capacity is never silently exceeded: spill, re-fetch, move a node off the device, or fail loudly."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hetc.errors import MemoryPlanError
from hetc.ir import Graph, Node, Value
from hetc.memory import plan_memory
from hetc.memory.artifact import spills_note
from hetc.memory.retime import retime
from hetc.schedule.artifact import Task
from hetc.target.model import DmaEngine, Memory
from test_memory_planner import KIB, list_schedule, make_target


def _fast_dma(target, **kw):
    """Same target with a 100 B/ns DMA engine, and a DRAM as fast so that it moves at that speed (a DRAM user
    shares DRAM's bandwidth: hetc.schedule.dram), so that a spill finishes within one 100 ns node."""
    memories = {**target.memories, "dram": replace(target.memories["dram"], bandwidth=100.0)}
    return type(target)(**{**{k: v for k, v in target.__dict__.items() if k != "_cache"}, "memories": memories,
                           "dmas": {"dma": DmaEngine("dma", ("dram", "sram"), 100.0, 0.0)}, **kw})


def _skip_graph() -> Graph:
    """a = Conv(x); b = Softmax(a); c = Softmax(b); d = Add(a, c): a is idle while b and c are live."""
    x, a, b, c, d = (Value(n, "float32", (1, 1024)) for n in "xabcd")     # 4 KiB each
    nodes = [Node(0, "Conv", "conv", [x], [a]), Node(1, "Softmax", "s1", [a], [b]),
             Node(2, "Softmax", "s2", [b], [c]), Node(3, "Add", "add", [a, c], [d])]
    return Graph.build("skip", nodes, [x], [d], {"": 17})


def test_spill_evicts_the_idle_buffer_and_reloads_it_before_its_next_use():
    graph = _skip_graph()
    roomy = _fast_dma(make_target(sram=64 * KIB))
    schedule = list_schedule(graph, roomy, {n.id: "npu" for n in graph})
    assert plan_memory(graph, schedule, roomy).stats["sram"].lower_bound_bytes == 12 * KIB

    tight = _fast_dma(make_target(sram=10 * KIB))
    heard: list[str] = []
    plan = plan_memory(graph, schedule, tight, progress=heard.append)
    plan.verify(tight)
    assert [(s.value, s.memory, s.to, s.bytes) for s in plan.spills] == [("a", "sram", "dram", 4 * KIB)]
    assert heard and heard[0].startswith("repair round 1: 'sram' too full at ")   # a long plan shows progress
    spill = plan.spills[0]
    evict, reload = plan.schedule.task(spill.evict_task), plan.schedule.task(spill.reload_task)
    assert (evict.src, evict.dst, evict.engine) == ("sram", "dram", "dma")
    assert (reload.src, reload.dst) == ("dram", "sram")
    add = next(t for t in plan.schedule.tasks if t.node == 3)
    assert plan.task_buffers[add.id].reads[0] == "a@sram#1"          # rebound to the reloaded copy
    assert reload.id in add.deps and evict.id in reload.deps
    assert plan.task_buffers[evict.id].writes == ("a@dram",)
    stats = plan.stats["sram"]
    assert stats.spilled_bytes == 4 * KIB and stats.peak_bytes <= 10 * KIB
    assert plan.schedule.makespan_ns >= schedule.makespan_ns          # re-timed, never earlier


def _with_l2(target):
    """``_fast_dma``'s target with an on-chip L2 as its staging memory, linked to the SRAM and to DRAM."""
    fast = _fast_dma(target)
    memories = {**fast.memories, "l2": Memory("l2", 1 << 20, 100.0, 64, "l2")}
    dmas = {**fast.dmas, "dma_l2": DmaEngine("dma_l2", ("sram", "l2"), 100.0, 0.0),
            "dma_l2_dram": DmaEngine("dma_l2_dram", ("l2", "dram"), 100.0, 0.0)}
    return replace(fast, memories=memories, dmas=dmas, staging="l2", _cache={})


def test_a_target_that_joins_values_in_its_l2_spills_there():
    graph = _skip_graph()
    target = _with_l2(make_target(sram=10 * KIB))
    schedule = list_schedule(graph, target, {n.id: "npu" for n in graph})
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    assert [(s.value, s.memory, s.to) for s in plan.spills] == [("a", "sram", "l2")]
    evict, reload = plan.schedule.task(plan.spills[0].evict_task), plan.schedule.task(plan.spills[0].reload_task)
    assert (evict.src, evict.dst, evict.engine) == ("sram", "l2", "dma_l2")
    assert (reload.src, reload.dst, reload.engine) == ("l2", "sram", "dma_l2")
    assert plan.task_buffers[evict.id].writes == ("a@l2",)
    assert plan.stats["l2"].peak_bytes == 4 * KIB
    # where joined values go to DRAM (hetc.planning's fallback when the L2 overflows), spills do too
    in_dram = plan_memory(graph, schedule, target.joining_in_dram())
    assert [(s.value, s.to) for s in in_dram.spills] == [("a", "dram")]
    # the build's progress and report.txt say where spills went
    assert spills_note(plan.spills) == "1 spill (1 to l2)" and spills_note(()) == "0 spills"
    assert spills_note(plan.spills + in_dram.spills * 2) == "3 spills (2 to dram, 1 to l2)"


def test_retiming_keeps_each_engine_order():
    plan = plan_memory(_skip_graph(), list_schedule(_skip_graph(), _fast_dma(make_target()), {n.id: "npu" for n in
                       _skip_graph()}), _fast_dma(make_target(sram=10 * KIB)))
    for lane in plan.schedule.engine_tasks().values():
        for before, after in zip(lane, lane[1:]):
            assert before.end_ns <= after.start_ns
    by_id = {t.id: t for t in plan.schedule.tasks}
    assert all(by_id[d].end_ns <= t.start_ns for t in plan.schedule.tasks for d in t.deps)


def test_retime_reports_a_cycle():
    a = Task(0, "compute", "cpu", 0, 10, deps=(1,))
    b = Task(1, "compute", "npu", 5, 15, deps=(0,))
    assert retime([a, b], 0) is None


def test_constants_are_re_fetched_instead_of_evicted():
    x = Value("x", "float32", (1, 1024))
    w = Value("w", "float32", (1, 1024), const=np.ones((1, 1024), np.float32))
    a, b, c, d = (Value(n, "float32", (1, 1024)) for n in "abcd")
    nodes = [Node(0, "Mul", "m1", [x, w], [a]), Node(1, "Softmax", "s1", [a], [b]),
             Node(2, "Softmax", "s2", [b], [c]), Node(3, "Mul", "m2", [c, w], [d])]
    graph = Graph.build("weights", nodes, [x], [d], {"": 17})
    tight = _fast_dma(make_target(sram=10 * KIB))
    plan = plan_memory(graph, list_schedule(graph, tight, {n.id: "npu" for n in nodes}), tight)
    plan.verify(tight)
    refetch = [s for s in plan.spills if s.value == "w"]
    assert refetch and refetch[0].evict_task is None
    reload = plan.schedule.task(refetch[0].reload_task)
    assert plan.task_buffers[reload.id].reads == ("w@dram",)


def test_working_set_larger_than_the_scratchpad_fails_with_the_details():
    x, a = Value("x", "float32", (1, 2048)), Value("a", "float32", (1, 2048))   # 8 KiB in, 8 KiB out
    graph = Graph.build("big", [Node(0, "Softmax", "sm", [x], [a])], [x], [a], {"": 17})
    target = _fast_dma(make_target(sram=12 * KIB))
    schedule = list_schedule(graph, target, {0: "npu"})
    with pytest.raises(MemoryPlanError) as err:
        plan_memory(graph, schedule, target, allow_moves=False)
    message = str(err.value)
    assert "memory 'sram' overflows at t=" in message
    assert "16384 B required, 12288 B available" in message
    assert "x@sram (8192 B)" in message and "a@sram (8192 B)" in message


def test_no_dma_to_dram_means_no_spill():
    graph = _skip_graph()
    target = make_target(sram=10 * KIB)
    schedule = list_schedule(graph, target, {n.id: "npu" for n in graph})
    cut = type(target)(**{**{k: v for k, v in target.__dict__.items() if k != "_cache"}, "dmas": {}})
    with pytest.raises(MemoryPlanError, match="memory 'sram' overflows"):
        plan_memory(graph, schedule, cut, allow_moves=False)


def test_a_node_that_cannot_fit_moves_to_another_device_and_the_graph_is_rescheduled():
    x, a = Value("x", "float32", (1, 2048)), Value("a", "float32", (1, 2048))
    b = Value("b", "float32", (1, 512))
    nodes = [Node(0, "Softmax", "big", [x], [a]), Node(1, "ReduceMean", "small", [a], [b])]
    graph = Graph.build("big", nodes, [x], [b], {"": 17})
    target = _fast_dma(make_target(sram=12 * KIB))
    schedule = list_schedule(graph, target, {0: "npu", 1: "npu"})
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    assert plan.details["moved_nodes"] == [
        {"node": 0, "op": "Softmax", "from": "npu", "to": "cpu", "memory": "sram", "at_ns": 82}]
    assert plan.schedule.placement == {0: "cpu", 1: "npu"}
    big = next(t for t in plan.schedule.tasks if t.node == 0)
    assert big.engine == "cpu" and plan.task_buffers[big.id].reads == ("x@dram",)
    # a is now made in DRAM and copied to the NPU for the small node, which still fits
    assert plan.buffer("a@sram").kind == "copy" and plan.stats["sram"].peak_bytes <= 12 * KIB


def test_a_graph_with_alias_nodes_is_rescheduled_too():
    # as above, with the small node reading a Region of the big one's output: the move reschedules it with
    # the scheduler's own list scheduler, which knows alias nodes (hetc.schedule.tasks)
    from hetc.ir.tiles import REGION, TILE_DOMAIN
    x, a = Value("x", "float32", (1, 2048)), Value("a", "float32", (1, 2048))
    half, b = Value("half", "float32", (1, 1024)), Value("b", "float32", (1, 512))
    nodes = [Node(0, "Softmax", "big", [x], [a]),
             Node(1, REGION, "half", [a], [half], {"starts": [0, 0], "ends": [1, 1024]}, TILE_DOMAIN),
             Node(2, "ReduceMean", "small", [half], [b])]
    graph = Graph.build("big", nodes, [x], [b], {"": 17})
    target = _fast_dma(make_target(sram=12 * KIB))
    schedule = list_schedule(graph, target, {0: "npu", 2: "npu"})
    assert schedule.aliases == {1: "sram"}
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    assert [(m["node"], m["to"]) for m in plan.details["moved_nodes"]] == [(0, "cpu")]
    assert plan.schedule.placement == {0: "cpu", 2: "npu"} and plan.schedule.aliases == {1: "dram"}
    region = plan.buffer("half@dram")                      # the Region now lies in a's DRAM bytes
    assert region.alias_of == "a@dram" and region.offset == plan.buffer("a@dram").offset


def _four_matmuls():
    """Four MatMuls in a chain on the NPU, each with its own 4 KiB weight, in a 16 KiB scratchpad, and a
    schedule made for a scratchpad too large to bound the lead (hetc.schedule.tasks.lead_deps): its idle DMA
    engine fetches every weight up front, which does not fit in 16 KiB."""
    x = Value("x", "float32", (1, 1024))
    cur, nodes = x, []
    for i in range(4):
        w = Value(f"w{i}", "float32", (1, 1024), const=np.full((1, 1024), i, np.float32))
        out = Value(f"v{i}", "float32", (1, 1024))
        nodes.append(Node(i, "MatMul", f"m{i}", [cur, w], [out]))
        cur = out
    graph = Graph.build("prefetch", nodes, [x], [cur], {"": 17})
    target = _fast_dma(make_target(sram=16 * KIB))
    unbounded = _fast_dma(make_target(sram=1024 * KIB))
    return graph, target, list_schedule(graph, unbounded, {n.id: "npu" for n in nodes})


def test_the_scheduler_bounds_each_copy_lead_by_the_scratchpad():
    # Scheduled for the 16 KiB scratchpad itself, the weights' copies wait for the compute whose end makes room
    # (the input and four weights do not fit at once): no spill, no postponement; the scheduler does not see
    # the outputs, so double buffering still holds two copies back, at no cost to the makespan.
    graph, target, _ = _four_matmuls()
    schedule = list_schedule(graph, target, {n.id: "npu" for n in graph})
    start = {t.node if t.kind == "compute" else t.value: t for t in schedule.tasks}
    assert start["w3"].start_ns >= start[0].end_ns and start[0].id in start["w3"].deps
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    assert plan.spills == () and plan.details["postponed_transfers"] == []
    assert plan.schedule.makespan_ns == schedule.makespan_ns


def test_an_early_prefetch_is_postponed_rather_than_spilled():
    # Four Mul nodes, each with its own 4 KiB weight: the idle DMA engine fetches every weight up front,
    # which does not fit; moving the later fetches down the DMA queue does, without a second transfer.
    graph, target, schedule = _four_matmuls()
    before = {t.value: t.start_ns for t in schedule.tasks if t.kind == "transfer"}
    plan = plan_memory(graph, schedule, target, double_buffer=False)   # the repair alone
    plan.verify(target)
    assert plan.spills == () and plan.details["postponed_transfers"]
    after = {t.value: t.start_ns for t in plan.schedule.tasks if t.kind == "transfer"}
    assert after["w3"] > before["w3"]
    assert len(plan.schedule.tasks) == len(schedule.tasks)          # no extra traffic
    assert plan.stats["sram"].peak_bytes <= 16 * KIB


def test_with_an_l2_a_postponed_prefetch_is_read_into_it_and_copied_on_late():
    # The same early fetches on a target with an L2: a postponed weight is read from DRAM into the L2 (its DRAM
    # read no later in DRAM's queue than needed) and copied on into the scratchpad just before its reader.
    graph, _, _ = _four_matmuls()
    target = _with_l2(make_target(sram=16 * KIB))
    schedule = list_schedule(graph, _with_l2(make_target(sram=1024 * KIB)), {n.id: "npu" for n in graph})
    plan = plan_memory(graph, schedule, target, double_buffer=False)
    plan.verify(target)
    staged = plan.details["staged_transfers"]
    assert staged and plan.spills == () and set(staged) <= set(plan.details["postponed_transfers"])
    tasks = plan.schedule.by_id()
    for copy in (tasks[k] for k in staged):
        (read,) = (tasks[d] for d in copy.deps if tasks[d].value == copy.value)
        assert (read.src, read.dst, read.engine) == ("dram", "l2", "dma_l2_dram")
        assert (copy.src, copy.dst, copy.engine) == ("l2", "sram", "dma_l2")
        assert plan.task_buffers[read.id].writes == (f"{copy.value}@l2",)
        assert plan.task_buffers[copy.id].reads == (f"{copy.value}@l2",)
        assert read.end_ns <= copy.start_ns
    assert plan.stats["sram"].peak_bytes <= 16 * KIB


def test_double_buffering_loads_a_weight_no_earlier_than_the_compute_before_its_reader():
    # The same four MatMuls: with double buffering no repair is needed at all. Each weight's copy starts no
    # earlier than the MatMul before its reader, so at most two weights are in the scratchpad at once.
    graph, target, schedule = _four_matmuls()
    planned = {t.node if t.kind == "compute" else t.value: t.start_ns for t in schedule.tasks}
    assert planned["w3"] < planned[2] and planned["w2"] < planned[1]          # the DMA queue runs ahead
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    assert plan.spills == () and plan.details["postponed_transfers"] == [] and plan.details["limited_prefetches"] == 2
    start = {t.node: t.start_ns for t in plan.schedule.tasks if t.kind == "compute"}
    for t in plan.schedule.tasks:
        if t.kind == "transfer" and t.value in ("w2", "w3"):
            assert t.start_ns >= start[int(t.value[1]) - 1]
    assert len(plan.schedule.tasks) == len(schedule.tasks)
    # Where everything fits, loading ahead is free: the scheduler's lead stays.
    roomy = _fast_dma(make_target(sram=64 * KIB))
    assert plan_memory(graph, schedule, roomy).details["limited_prefetches"] == 0


def test_a_postponed_copy_stays_before_every_task_that_waits_for_it():
    # An earlier spill rebound the copy's first reader (task 1) to a reload, so the buffer lists only task 2;
    # task 1 still waits for the copy, which may therefore move no later than just before task 1.
    from hetc.memory.lifetimes import BufferSpec, BufferTable
    from hetc.memory.spill import Postponements, _Candidate, _Edits, _postpone
    target = make_target()
    tasks = [Task(0, "transfer", "dma", 0, 10, value="w", src="dram", dst="sram", bytes=10),
             Task(1, "compute", "npu", 50, 60, deps=(0,), node=1, op="Relu"),
             Task(2, "compute", "npu", 200, 210, deps=(0,), node=2, op="Relu")]
    table = BufferTable({"w@sram": BufferSpec("w@sram", "w", "sram", 10, "float32", (10,), "copy", 0, [2])},
                        {1: ["w@sram"], 2: ["w@sram"]}, {0: ["w@sram"]})
    moved = _postpone(table, _Edits(tasks), target, _Candidate("w@sram", (0,), (2,), 200), 0,
                      Postponements())
    assert moved and tasks[0].end_ns <= 50 - target.sync_ns
    assert retime(tasks, target.sync_ns) is not None


def test_a_copy_is_postponed_a_few_times_at_most():
    # The copy's reader slips 10 ns a round (another of its operands queued behind the postponed copy), so each
    # round the copy could be postponed 10 ns further, as late as still meets the reader, without end.
    from hetc.memory.lifetimes import BufferSpec, BufferTable
    from hetc.memory.spill import MAX_POSTPONEMENTS, Postponements, _Candidate, _Edits, _postpone
    target = make_target()
    tasks = [Task(0, "transfer", "dma", 0, 10, value="w", src="dram", dst="sram", bytes=10),
             Task(1, "compute", "npu", 200, 210, deps=(0,), node=1, op="Relu")]
    table = BufferTable({"w@sram": BufferSpec("w@sram", "w", "sram", 10, "float32", (10,), "copy", 0, [1])},
                        {1: ["w@sram"]}, {0: ["w@sram"]})
    edits, history, moved = _Edits(tasks), Postponements(), []
    for k in range(MAX_POSTPONEMENTS + 2):
        reader_at = 200 + 10 * k
        edits.put(replace(edits[1], start_ns=reader_at, end_ns=reader_at + 10))
        moved.append(_postpone(table, edits, target, _Candidate("w@sram", (0,), (1,), reader_at), 0, history))
    assert moved == [True] * MAX_POSTPONEMENTS + [False, False]
    assert edits[0].end_ns == 200 + 10 * (MAX_POSTPONEMENTS - 1) and history.times == {0: MAX_POSTPONEMENTS}


def test_double_buffering_for_the_excess_releases_only_the_copies_furthest_ahead():
    # Three 100-byte weights loaded back to back for three computes; at t = 30 all three are live and 100
    # bytes too many. Limiting every prefetch waiting through the stretch moves w2 and w3; limiting only the
    # excess moves w3 alone, the furthest ahead of its reader (w2's release at t = 30 frees nothing then).
    from hetc.memory.prefetch import Stretch, limit_prefetch
    from hetc.schedule.artifact import Schedule, SolverStats
    target = make_target()
    tasks = (Task(0, "transfer", "dma", 0, 10, value="w1", src="dram", dst="sram", bytes=100),
             Task(1, "transfer", "dma", 10, 20, value="w2", src="dram", dst="sram", bytes=100),
             Task(2, "transfer", "dma", 20, 30, value="w3", src="dram", dst="sram", bytes=100),
             Task(3, "compute", "npu", 30, 100, deps=(0,), node=1, op="MatMul"),
             Task(4, "compute", "npu", 100, 200, deps=(1,), node=2, op="MatMul"),
             Task(5, "compute", "npu", 200, 300, deps=(2,), node=3, op="MatMul"))
    schedule = Schedule(tasks, {1: "npu", 2: "npu", 3: "npu"}, SolverStats("list", "HEURISTIC", 300, 300, 0.0),
                        lower_bound_ns=300)
    crowded = {"sram": [Stretch(20, 100, fullest_at=30, excess=100)]}
    every, moved_every = limit_prefetch(schedule, target, crowded)
    excess, moved_excess = limit_prefetch(schedule, target, crowded, only_excess=True)
    assert moved_every == {1, 2} and moved_excess == {2}
    start = {t.id: t.start_ns for t in excess.tasks}
    assert (start[1], start[2]) == (10, 100) and excess.makespan_ns == 300       # w3 waits for compute 2's start
    assert {t.id: t.start_ns for t in every.tasks}[1] == 30
