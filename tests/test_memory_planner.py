"""plan_memory on hand-built graphs, targets and schedules (real dataclasses, no scheduler needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hetc.errors import MemoryPlanError
from hetc.ir import Graph, Node, Value
from hetc.memory import MemoryPlan, plan_memory
from hetc.schedule.api import schedule_placement
from hetc.schedule.artifact import Schedule
from hetc.target.model import Device, DmaEngine, Memory
from hetc.target.target import Target

from conftest import MODELS_DIR

KIB = 1024


# ------------------------------------------------------------------------------------------ builders
def make_target(sram: int = 64 * KIB, dram: int = 1 << 24, npu_dram_dma: bool = True) -> Target:
    """CPU on DRAM, an NPU on its SRAM, one DMA engine between them (1 byte/ns, no latency)."""
    memories = {"dram": Memory("dram", dram, 10.0, 64, "dram"), "sram": Memory("sram", sram, 100.0, 64)}
    devices = {"cpu": Device("cpu", "cpu", "dram", {"float32": 1.0}, {"default": 0.5}, 0.0),
               "npu": Device("npu", "npu", "sram", {"float32": 10.0}, {"default": 0.5}, 0.0)}
    dmas = {"dma": DmaEngine("dma", ("dram", "sram"), 1.0, 0.0)} if npu_dram_dma else {}
    return Target("tiny", "test target", memories, devices, dmas, sync_ns=0, priority=("npu", "cpu"))


def chain_graph(ops: list[str], shape: tuple[int, ...] = (1, 1024), weights: dict[int, tuple[int, ...]] | None = None
                ) -> Graph:
    """x -> ops[0] -> ops[1] -> ... -> y; ``weights[i]`` adds a constant second input to node i."""
    x = Value("x", "float32", shape)
    cur, nodes = x, []
    for i, op in enumerate(ops):
        out = Value(f"v{i}", "float32", shape)
        inputs = [cur]
        if weights and i in weights:
            inputs.append(Value(f"w{i}", "float32", weights[i], const=np.zeros(weights[i], np.float32)))
        nodes.append(Node(i, op, f"n{i}", inputs, [out]))
        cur = out
    return Graph.build("chain", nodes, [x], [cur], {"": 17})


def list_schedule(graph: Graph, target: Target, placement: dict[int, str], duration: int = 100) -> Schedule:
    """The scheduler's list scheduler on a fixed placement (the one the planner's fallback reschedules with),
    nodes in topological order, every node ``duration`` ns; unplaced nodes run on the CPU."""
    full = {n.id: placement.get(n.id, "cpu") for n in graph}
    return schedule_placement(graph, target, full, [n.id for n in graph.topo_order()], lambda n, d: duration)


# ------------------------------------------------------------------------------------------ tests
def test_chain_on_the_npu_verifies_and_reuses_memory():
    graph = chain_graph(["Conv", "Softmax", "Conv", "Softmax"], weights={0: (1, 256), 2: (1, 256)})
    target = make_target()
    schedule = list_schedule(graph, target, {n.id: "npu" for n in graph})
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    sram = plan.stats["sram"]
    assert sram.lower_bound_bytes <= sram.peak_bytes <= sram.capacity_bytes
    # a chain keeps at most input + output (+ a weight) live: far less than the sum of all its buffers
    total = sum(b.size for b in plan.buffers if b.memory == "sram")
    assert sram.peak_bytes < total
    assert plan.constants_bytes == 2 * 1024
    assert {b.id for b in plan.buffers if b.kind == "constant"} == {"w0@dram", "w2@dram"}
    assert all(b.offset < plan.constants_bytes for b in plan.buffers if b.kind == "constant")
    assert all(b.offset >= plan.constants_bytes for b in plan.buffers
               if b.memory == "dram" and b.kind != "constant")


def test_task_buffers_follow_operand_order_and_transfers():
    graph = chain_graph(["Conv"], weights={0: (1, 64)})
    target = make_target()
    schedule = list_schedule(graph, target, {0: "npu"})
    plan = plan_memory(graph, schedule, target)
    compute = next(t for t in plan.schedule.tasks if t.kind == "compute")
    assert plan.task_buffers[compute.id].reads == ("x@sram", "w0@sram")
    assert plan.task_buffers[compute.id].writes == ("v0@sram",)
    back = next(t for t in plan.schedule.tasks if t.kind == "transfer" and t.dst == "dram")
    assert plan.task_buffers[back.id].reads == ("v0@sram",)
    assert plan.task_buffers[back.id].writes == ("v0@dram",)
    assert plan.buffer("v0@dram").kind == "output" and plan.buffer("x@dram").kind == "input"
    assert plan.buffer("v0@dram").end_ns == plan.schedule.makespan_ns
    assert plan.buffer("x@dram").start_ns == 0


def test_lifetime_runs_from_writer_start_to_last_reader_end():
    graph = chain_graph(["Conv", "Softmax"])
    target = make_target()
    schedule = list_schedule(graph, target, {0: "npu", 1: "npu"})
    plan = plan_memory(graph, schedule, target)
    writer = next(t for t in schedule.tasks if t.node == 0)
    reader = next(t for t in schedule.tasks if t.node == 1)
    b = plan.buffer("v0@sram")
    assert (b.start_ns, b.end_ns) == (writer.start_ns, reader.end_ns)


def test_json_round_trip():
    graph = chain_graph(["Conv", "Relu", "Reshape"], weights={0: (1, 64)})
    target = make_target()
    schedule = list_schedule(graph, target, {0: "npu", 1: "npu", 2: "cpu"})
    plan = plan_memory(graph, schedule, target)
    again = MemoryPlan.loads(plan.dumps(), plan.schedule)
    assert again.buffers == plan.buffers and again.stats == plan.stats
    assert again.task_buffers == plan.task_buffers and again.spills == plan.spills
    assert again.reuse_deps == plan.reuse_deps and again.constants_bytes == plan.constants_bytes
    json.loads(plan.dumps())


def test_verify_catches_an_overlap():
    graph = chain_graph(["Conv", "Softmax", "Conv"])
    target = make_target()
    plan = plan_memory(graph, list_schedule(graph, target, {0: "npu", 1: "npu", 2: "npu"}), target)
    a, b = plan.buffer("v0@sram"), plan.buffer("v1@sram")   # both live while node 1 runs
    moved = tuple(x if x.id != b.id else type(b)(**{**b.__dict__, "offset": a.offset}) for x in plan.buffers)
    broken = MemoryPlan(**{**{k: v for k, v in plan.__dict__.items() if not k.startswith("_")}, "buffers": moved})
    with pytest.raises(MemoryPlanError, match="overlap in time and address"):
        broken.verify(target)


def test_an_alias_names_its_storage_owner_and_verify_refuses_an_alias_of_an_alias():
    """``Buffer.owner`` is one level (the buffer aliased, or itself): the plan verifier keeps it so."""
    import warnings

    from hetc.api import BuildOptions, build
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build(str(MODELS_DIR / "tiny_cnn.onnx"), BuildOptions(target="edge-soc", scheduler="heft"))
    plan, target = result.plan, result.target
    aliases = [b for b in plan.buffers if b.alias_of is not None]
    assert aliases and all(plan.owner_of(b.id).id == b.owner == b.alias_of for b in aliases)
    assert all(plan.owner_of(b.owner).alias_of is None for b in plan.buffers)
    first, second = aliases[0], next(b for b in plan.buffers if b.alias_of is None and b.id != aliases[0].owner
                                     and b.memory == aliases[0].memory)
    chained = tuple(type(b)(**{**b.__dict__, "alias_of": first.id}) if b.id == second.id else b for b in plan.buffers)
    broken = MemoryPlan(**{**{k: v for k, v in plan.__dict__.items() if not k.startswith("_")}, "buffers": chained})
    with pytest.raises(MemoryPlanError, match="not a storage owner"):
        broken.verify(target)


def test_dram_overflow_is_an_error_naming_the_memory():
    graph = chain_graph(["Softmax", "Softmax"], shape=(1, 4096))
    target = make_target(dram=20 * KIB)
    schedule = list_schedule(graph, target, {})
    with pytest.raises(MemoryPlanError, match=r"memory 'dram' overflows at t=\d+ ns: \d+ B required, 20480 B"):
        plan_memory(graph, schedule, target)


def test_missing_transfer_is_reported():
    graph = chain_graph(["Softmax"])
    target = make_target()
    schedule = list_schedule(graph, target, {0: "npu"})
    broken = schedule.with_tasks(tuple(t for t in schedule.tasks if not (t.kind == "transfer" and t.dst == "sram")))
    with pytest.raises(MemoryPlanError, match="missing a transfer"):
        plan_memory(graph, broken, target)


def test_reuse_deps_order_every_earlier_user_of_reused_bytes():
    graph = chain_graph(["Conv", "Softmax", "Conv", "Softmax", "Conv"], weights={0: (1, 512), 2: (1, 512)})
    target = make_target()
    _assert_reuse_deps(plan_memory(graph, list_schedule(graph, target, {n.id: "npu" for n in graph}), target))


def test_reuse_deps_name_one_task_per_engine_on_a_real_plan():
    # tiny_cnn on multi-npu: four cores, DMA engines and an L2; 200 dependencies listed every earlier user
    # until an engine's last one stood for the users before it (78)
    import warnings

    from hetc.api import BuildOptions, build
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build(str(MODELS_DIR / "tiny_cnn.onnx"), BuildOptions(target="multi-npu", scheduler="heft"))
    _assert_reuse_deps(result.plan)


def _assert_reuse_deps(plan: MemoryPlan) -> None:
    """Every earlier user, on another engine, of bytes a buffer takes over is waited for, or a later task of
    its engine is (an engine runs its program in order); each writer waits for one task per other engine, and
    an unpredicated one for none its own dependencies imply."""
    tasks = {t.id: t for t in plan.schedule.tasks}
    order = {t.id: i for lane in plan.schedule.engine_tasks().values() for i, t in enumerate(lane)}
    users: dict[str, set[int]] = {}
    for tid, tb in plan.task_buffers.items():
        for bid in [*tb.reads, *tb.writes]:
            if bid is not None:
                users.setdefault(plan.buffer(bid).alias_of or bid, set()).add(tid)
    owners = [b for b in plan.buffers if b.alias_of is None and b.kind != "constant" and b.size]
    checked = 0
    for a in owners:
        for b in owners:
            if a.memory != b.memory or a.end_ns > b.start_ns or a is b:
                continue
            if a.offset < b.offset + b.size and b.offset < a.offset + a.size:   # b reuses a's bytes
                writer = tasks[min(users[b.id], key=lambda t: (tasks[t].start_ns, t))]
                # (a predicated writer, skipped, drops its data dependencies: its reuse ones must stand alone)
                before = set(plan.reuse_deps.get(writer.id, ())) | (set() if writer.when else set(writer.deps))
                for u in users[a.id]:
                    if tasks[u].engine != writer.engine:
                        assert any(tasks[d].engine == tasks[u].engine and order[d] >= order[u] for d in before)
                        assert tasks[u].end_ns <= writer.start_ns
                        checked += 1
    assert checked > 0
    for w, waited in plan.reuse_deps.items():
        engines = [tasks[d].engine for d in waited]
        assert len(engines) == len(set(engines)) and tasks[w].engine not in engines
        assert tasks[w].when or not any(tasks[d].engine == tasks[x].engine and order[x] >= order[d]
                                        for d in waited for x in tasks[w].deps)


def test_each_reuse_dependency_names_the_storage_whose_bytes_its_writer_takes_over():
    from hetc.memory.reuse import taken_over
    graph = chain_graph(["Conv", "Softmax", "Conv", "Softmax", "Conv"], weights={0: (1, 512), 2: (1, 512)})
    target = make_target()
    plan = plan_memory(graph, list_schedule(graph, target, {n.id: "npu" for n in graph}), target)
    pairs = [(w, u) for w, users in plan.reuse_deps.items() for u in users]
    assert pairs and taken_over(plan, []) == set()
    for writer, user in pairs:
        (owner,) = taken_over(plan, [(writer, user)])   # (one storage of the user's here)
        written = [plan.buffer(b) for b in plan.task_buffers[writer].writes]
        taken = plan.buffer(owner)
        assert any(w.memory == taken.memory and w.offset < taken.end and taken.offset < w.end for w in written)
        assert taken.end_ns <= plan.schedule.by_id()[writer].start_ns
