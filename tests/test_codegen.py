"""Codegen: instruction streams, semaphore sufficiency and minimality, attributes, the golden listing."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from onnx import helper

from hetc.codegen import Bundle, Compute, Dma, Signal, Wait, emit
from hetc.codegen.attrs import decode_attrs, encode_attrs
from hetc.errors import BundleError
from hetc.memory.artifact import MemoryPlan
from handplan import plan_by_hand
from hetc.target import load_target

from test_sim_support import REPO, fixed_duration, mixed_plan, toy_target

GOLDEN = Path(__file__).parent / "golden" / "mixed_toy.asm"


def happens_before(bundle: Bundle) -> tuple[nx.DiGraph, dict[int, tuple[str, int]]]:
    """The order the programs guarantee: program order plus signal #k -> every wait for count >= k."""
    g = nx.DiGraph()
    where: dict[int, tuple[str, int]] = {}
    signals: dict[str, list[tuple[str, int]]] = {}
    for engine, program in bundle.programs.items():
        for pc, ins in enumerate(program.instructions):
            g.add_node((engine, pc))
            if pc:
                g.add_edge((engine, pc - 1), (engine, pc))
            if isinstance(ins, (Compute, Dma)):
                where[ins.task] = (engine, pc)
            if isinstance(ins, Signal):
                signals.setdefault(ins.sem, []).append((engine, pc))
    for engine, program in bundle.programs.items():
        for pc, ins in enumerate(program.instructions):
            if isinstance(ins, Wait):
                g.add_edge(signals[ins.sem][ins.count - 1], (engine, pc))
    return g, where


def required_orderings(plan: MemoryPlan) -> set[tuple[int, int]]:
    """(a, b): task a must end before task b starts. Data dependencies, plus address reuse computed by brute
    force over buffer pairs (independently of the codegen's own algorithm)."""
    pairs = {(d, t.id) for t in plan.schedule.tasks for d in t.deps}
    root = {b.id: (plan.buffer(b.alias_of) if b.alias_of else b) for b in plan.buffers}
    users: dict[str, set[int]] = {}
    writers: dict[str, set[int]] = {}
    for tid, tb in plan.task_buffers.items():
        for b in tb.reads:
            if b is not None:
                users.setdefault(root[b].id, set()).add(tid)
        for b in tb.writes:
            users.setdefault(root[b].id, set()).add(tid)
            writers.setdefault(root[b].id, set()).add(tid)
    roots = {r.id: r for r in root.values()}
    for x in roots.values():
        for y in roots.values():
            if x.id == y.id or x.memory != y.memory:
                continue
            if x.offset < y.offset + y.size and y.offset < x.offset + x.size:
                x_end = max(b.end_ns for b in plan.buffers if root[b.id].id == x.id)
                y_start = min(b.start_ns for b in plan.buffers if root[b.id].id == y.id)
                if x_end <= y_start:
                    pairs |= {(u, w) for u in users.get(x.id, ()) for w in writers.get(y.id, ()) if u != w}
    return pairs


def unordered(bundle: Bundle, plan: MemoryPlan) -> list[tuple[int, int]]:
    g, where = happens_before(bundle)
    # Vector clocks over the happens-before DAG: reach[n][e] is the last instruction of engine e ordered before
    # (or at) n, so a -> b holds iff b's clock for a's engine has reached a's pc.
    engines = {e: k for k, e in enumerate(bundle.programs)}
    reach: dict[tuple[str, int], np.ndarray] = {}
    for n in nx.topological_sort(g):
        clock = np.full(len(engines), -1, dtype=np.int64)
        for m in g.predecessors(n):
            np.maximum(clock, reach[m], out=clock)
        clock[engines[n[0]]] = n[1]
        reach[n] = clock
    return [(a, b) for a, b in sorted(required_orderings(plan))
            if reach[where[b]][engines[where[a][0]]] < where[a][1]]


def without_instruction(bundle: Bundle, engine: str, pc: int) -> Bundle:
    program = bundle.programs[engine]
    instructions = program.instructions[:pc] + program.instructions[pc + 1:]
    return replace(bundle, programs={**bundle.programs, engine: replace(program, instructions=instructions)})


def test_every_engine_gets_a_program_in_start_order() -> None:
    graph, target, plan = mixed_plan()
    bundle = emit(graph, plan, target)
    assert list(bundle.programs) == target.engines
    for engine, tasks in plan.schedule.engine_tasks().items():
        emitted = [i.task for i in bundle.programs[engine].instructions if isinstance(i, (Compute, Dma))]
        assert emitted == [t.id for t in tasks]


def test_semaphores_order_every_dependency_and_none_is_redundant() -> None:
    graph, target, plan = mixed_plan()
    bundle = emit(graph, plan, target)
    assert unordered(bundle, plan) == []
    waits = [(e, pc) for e, p in bundle.programs.items() for pc, i in enumerate(p.instructions)
             if isinstance(i, Wait)]
    assert waits
    for engine, pc in waits:   # minimality: dropping any single wait leaves some dependency unordered
        assert unordered(without_instruction(bundle, engine, pc), plan), f"wait {engine}[{pc}] is redundant"
    # Every signal is the one some wait counts to (no signal nobody needs).
    targeted = {(i.sem, i.count) for p in bundle.programs.values() for i in p.instructions if isinstance(i, Wait)}
    for p in bundle.programs.values():
        k = 0
        for i in p.instructions:
            if isinstance(i, Signal):
                k += 1
                assert (i.sem, k) in targeted


def test_reuse_of_scratchpad_bytes_is_ordered_by_a_semaphore() -> None:
    graph, target, plan = mixed_plan()
    reuse = required_orderings(plan) - {(d, t.id) for t in plan.schedule.tasks for d in t.deps}
    cross = [(a, b) for a, b in reuse if plan.schedule.task(a).engine != plan.schedule.task(b).engine]
    assert cross, "the toy plan should reuse bytes across engines"
    assert unordered(emit(graph, plan, target), plan) == []


@pytest.mark.parametrize("placement", ["npu", "mixed", "cpu"])
def test_semaphores_on_tiny_cnn(placement: str) -> None:
    from hetc.frontend import load_onnx
    from hetc.passes import optimize
    graph = optimize(load_onnx(REPO / "models" / "tiny_cnn.onnx"))
    target = load_target("edge-soc")
    devices = {"npu": ["npu"], "cpu": ["cpu"], "mixed": ["npu", "dsp", "cpu"]}[placement]
    chosen = {}
    for k, node in enumerate(graph.nodes):
        ok = [d for d in devices if target.supports(node, d)] or ["cpu"]
        chosen[node.id] = ok[k % len(ok)]
    plan = plan_by_hand(graph, target, chosen, fixed_duration)
    bundle = emit(graph, plan, target)
    assert unordered(bundle, plan) == []
    for engine, p in bundle.programs.items():
        for pc, i in enumerate(p.instructions):
            if isinstance(i, Wait):
                assert unordered(without_instruction(bundle, engine, pc), plan)


def test_in_place_flatten_reads_and_writes_the_same_bytes() -> None:
    graph, target, plan = mixed_plan()
    bundle = emit(graph, plan, target)
    flatten = next(i for i in bundle.programs["npu"].instructions if isinstance(i, Compute) and i.op == "Flatten")
    assert flatten.inplace == (0,)
    assert (flatten.inputs[0].memory, flatten.inputs[0].offset) == (flatten.outputs[0].memory,
                                                                    flatten.outputs[0].offset)
    assert flatten.outputs[0].storage == flatten.inputs[0].buffer


def test_operands_carry_layout_and_dram_traffic() -> None:
    graph, target, plan = mixed_plan()
    bundle = emit(graph, plan, target)
    conv = next(i for i in bundle.programs["npu"].instructions if isinstance(i, Compute))
    w = conv.inputs[1]
    assert (w.shape, w.strides, w.nbytes) == ((4, 2, 3, 3), (72, 36, 12, 4), 288)
    assert conv.dram_bytes == 0
    cpu = [i for i in bundle.programs["cpu"].instructions if isinstance(i, Compute)]
    assert all(i.dram_bytes == sum(o.nbytes for o in (*i.inputs, *i.outputs)) for i in cpu)
    for dma in (i for p in bundle.programs.values() for i in p.instructions if isinstance(i, Dma)):
        assert dma.dram_bytes == dma.bytes * ((dma.src.memory == "dram") + (dma.dst.memory == "dram"))


def test_attributes_round_trip_through_json() -> None:
    body = helper.make_graph([], "body", [], [])
    attrs = {"alpha": 0.25, "axes": [0, 2], "scales": [1.0, 2.0], "mode": "nearest", "value": np.arange(6.0)
             .reshape(2, 3).astype(np.float32), "nan": float("nan"), "body": body, "names": ["a", "b"],
             "blob": b"\x00\x01"}
    back = decode_attrs(encode_attrs(attrs))
    assert back["alpha"] == 0.25 and back["axes"] == [0, 2] and back["scales"] == [1.0, 2.0]
    assert back["mode"] == "nearest" and back["names"] == ["a", "b"] and back["blob"] == b"\x00\x01"
    assert back["value"].dtype == np.float32 and np.array_equal(back["value"], attrs["value"])
    assert np.isnan(back["nan"]) and back["body"] == body
    with pytest.raises(BundleError, match="cannot serialise"):
        encode_attrs({"bad": object()})


def test_missing_task_buffers_is_a_clear_error() -> None:
    graph, target, plan = mixed_plan()
    broken = replace(plan, task_buffers={t: b for t, b in plan.task_buffers.items() if t != 3})
    with pytest.raises(BundleError, match="binds no buffers to task 3"):
        emit(graph, broken, target)


def test_operand_outside_the_device_home_memory_is_refused() -> None:
    graph, target, plan = mixed_plan()
    conv_task = next(t for t in plan.schedule.tasks if t.op == "Conv")
    tb = plan.task_buffers[conv_task.id]
    bad = replace(tb, reads=("x@dram",) + tb.reads[1:])
    with pytest.raises(BundleError, match="missing a transfer"):
        emit(graph, replace(plan, task_buffers={**plan.task_buffers, conv_task.id: bad}), target)


def test_golden_listing() -> None:
    graph, target, plan = mixed_plan(toy_target())
    bundle = emit(graph, plan, target)
    listing = "".join(p.asm() for p in bundle.programs.values())
    if os.environ.get("HETC_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(listing)
    assert listing == GOLDEN.read_text(), "listing changed; rerun with HETC_UPDATE_GOLDEN=1 if intended"
