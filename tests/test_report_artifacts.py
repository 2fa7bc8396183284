"""Hand-built, real artifacts for the report tests: a Target, a Graph, a Schedule that obeys the execution
model (transfers along routes, one task per engine at a time, sync cost across engines), a MemoryPlan of its
buffers, and a SimResult replayed from the schedule with slower DMA (shared-DRAM contention).

They are small, fast, fully controlled *inputs* (e.g. a DSP with a short op list, thousands of tasks on
demand); test_report_pipeline.py runs the same exports on artifacts from the real scheduler, planner and
simulator."""
from __future__ import annotations

from dataclasses import dataclass

from hetc.ir import Graph, Node, Value
from hetc.memory.artifact import Buffer, MemoryPlan, MemoryStats, TaskBuffers
from hetc.schedule.artifact import Schedule, SolverStats, Task
from hetc.sim.result import SimEvent, SimResult, SyncEdge
from hetc.target.model import Device, DmaEngine, Memory
from hetc.target.ops import KERNEL_SET
from hetc.target.target import Target

SYNC_NS = 200
MiB = 1 << 20


def make_target() -> Target:
    memories = {"dram": Memory("dram", 512 * MiB, 16.0, 64, "dram"),
                "npu_sram": Memory("npu_sram", 2 * MiB, 64.0, 64, "sram"),
                "dsp_tcm": Memory("dsp_tcm", 1 * MiB, 32.0, 64, "sram")}
    devices = {"cpu": Device("cpu", "cpu", "dram", {"float32": 16.0}, {"default": 0.5}, 2000.0),
               "npu": Device("npu", "npu", "npu_sram", {"float32": 256.0}, {"default": 0.7}, 500.0, ops=KERNEL_SET),
               "dsp": Device("dsp", "dsp", "dsp_tcm", {"float32": 64.0}, {"default": 0.6}, 800.0,
                              ops=frozenset({"Relu", "BatchNormalization", "Add", "Sigmoid", "Mul"}))}
    dmas = {"dma_npu": DmaEngine("dma_npu", ("dram", "npu_sram"), 8.0, 300.0),
            "dma_dsp": DmaEngine("dma_dsp", ("dram", "dsp_tcm"), 6.0, 300.0),
            "dma_x": DmaEngine("dma_x", ("npu_sram", "dsp_tcm"), 12.0, 200.0)}
    return Target("test-soc", "three devices, three DMA engines", memories, devices, dmas, SYNC_NS,
                  ("npu", "dsp", "cpu"))


_OPS = ("Conv", "Relu", "MaxPool", "Conv", "BatchNormalization", "Add", "Softmax", "Transpose", "Gemm", "Erf")
_DEVICE_OF_OP = {"Conv": "npu", "Gemm": "npu", "MaxPool": "npu", "Relu": "dsp", "BatchNormalization": "dsp",
                 "Add": "dsp", "Softmax": "cpu", "Transpose": "npu", "Erf": "cpu"}


def make_graph(n_nodes: int = 12, channels: int = 8) -> Graph:
    """A chain of conv-net ops with a residual Add every few nodes; every Conv/Gemm has a weight."""
    shape = (1, channels, 16, 16)
    x = Value("x", "float32", shape)
    nodes, prev, skip = [], x, x
    for i in range(n_nodes):
        op = _OPS[i % len(_OPS)]
        inputs: list[Value | None] = [prev]
        if op in ("Conv", "Gemm"):
            import numpy as np
            w = np.zeros((channels, channels, 1, 1), dtype=np.float32)
            inputs.append(Value(f"w{i}", "float32", w.shape, const=w))
        if op == "Add":
            inputs.append(skip)
        out = Value(f"t{i}", "float32", shape)
        nodes.append(Node(i, op, f"{op.lower()}_{i}", inputs, [out]))
        if op == "Add":
            skip = out
        prev = out
    return Graph.build("chain", nodes, [x], [prev], {"": 17})


@dataclass
class _Clock:
    free: dict[str, int]


def make_schedule(graph: Graph, target: Target) -> Schedule:
    """A list schedule in topological order with explicit transfers, as DESIGN.md's execution model says."""
    tasks: list[Task] = []
    clock = _Clock({e: 0 for e in target.engines})
    where: dict[tuple[str, str], int] = {}          # (value, memory) -> id of the task that put it there
    producer: dict[str, int] = {}                   # value -> producing compute task id

    def add(kind: str, engine: str, deps: tuple[int, ...], duration: int, **kw: object) -> Task:
        ready = 0
        for d in deps:
            dep = tasks[d]
            ready = max(ready, dep.end_ns + (SYNC_NS if dep.engine != engine else 0))
        start = max(ready, clock.free[engine])
        task = Task(len(tasks), kind, engine, start, start + duration, deps, **kw)
        tasks.append(task)
        clock.free[engine] = task.end_ns
        return task

    def bring(value: Value, memory: str) -> int | None:
        if (value.name, memory) in where:
            return where[(value.name, memory)]
        src = "dram" if value.producer is None else target.home(tasks[producer[value.name]].engine)
        last = producer.get(value.name)
        for a, b in target.route(src, memory):
            if (value.name, b) in where:
                last = where[(value.name, b)]
                continue
            engine = target.engines_between(a, b)[0].name
            t = add("transfer", engine, () if last is None else (last,),
                    int(target.transfer_ns(value.nbytes, engine)), value=value.name, src=a, dst=b,
                    bytes=value.nbytes)
            where[(value.name, b)] = last = t.id
        return last

    for node in graph.topo_order():
        device = _DEVICE_OF_OP[node.op_type]
        home = target.home(device)
        deps = {d for v in node.present_inputs if (d := bring(v, home)) is not None}
        work = sum(v.nbytes for v in node.present_inputs) * 4
        duration = int(target.devices[device].launch_ns + work / target.devices[device].peak["float32"])
        t = add("compute", device, tuple(sorted(deps)), duration, node=node.id, op=node.op_type)
        for v in node.outputs:
            producer[v.name] = t.id
            where[(v.name, home)] = t.id
    for v in graph.outputs:
        bring(v, "dram")
    placement = {t.node: t.engine for t in tasks if t.kind == "compute"}
    makespan = max(t.end_ns for t in tasks)
    stats = SolverStats("list", "HEURISTIC", makespan, makespan * 6 // 10, 0.01)
    return Schedule(tuple(tasks), placement, stats, lower_bound_ns=makespan * 6 // 10)


def make_plan(graph: Graph, schedule: Schedule, target: Target) -> MemoryPlan:
    """One buffer per (value, memory) copy, live from its writer's start to its last reader's end, packed
    first-fit by address among the buffers live at the same time."""
    writer: dict[tuple[str, str], Task] = {}
    readers: dict[tuple[str, str], list[Task]] = {}
    nodes = graph.node_map()
    for t in schedule.tasks:
        if t.kind == "transfer":
            writer[(t.value, t.dst)] = t
            readers.setdefault((t.value, t.src), []).append(t)
        else:
            home = target.home(t.engine)
            for v in nodes[t.node].outputs:
                writer[(v.name, home)] = t
            for v in nodes[t.node].present_inputs:
                readers.setdefault((v.name, home), []).append(t)
    buffers: list[Buffer] = []
    active: dict[str, list[Buffer]] = {m: [] for m in target.memories}
    keys = sorted(set(writer) | set(readers), key=lambda k: (writer[k].start_ns if k in writer else 0, k))
    for value, memory in keys:
        v = graph.values[value]
        start = writer[(value, memory)].start_ns if (value, memory) in writer else 0
        end = max([r.end_ns for r in readers.get((value, memory), [])] + [start + 1, schedule.makespan_ns
                                                                           if v in graph.outputs else 0])
        kind = "constant" if v.is_const else "input" if v in graph.inputs else "activation"
        live = active[memory] = [b for b in active[memory] if start < b.end_ns]
        offset = 0
        for b in sorted(live, key=lambda b: b.offset):
            if offset + v.nbytes <= b.offset:
                break
            offset = max(offset, -(-(b.offset + b.size) // 64) * 64)
        buffers.append(Buffer(f"{value}@{memory}", value, memory, offset, v.nbytes, start, end, kind,
                              shape=v.shape))
        active[memory].append(buffers[-1])
    stats = {}
    for m, mem in target.memories.items():
        mine = [b for b in buffers if b.memory == m]
        deltas: dict[int, int] = {}
        for b in mine:
            deltas[b.start_ns] = deltas.get(b.start_ns, 0) + b.size
            deltas[b.end_ns] = deltas.get(b.end_ns, 0) - b.size
        live, lower_bound = 0, 0
        for t in sorted(deltas):
            live += deltas[t]
            lower_bound = max(lower_bound, live)
        stats[m] = MemoryStats(max((b.offset + b.size for b in mine), default=0), lower_bound, mem.size)
    return MemoryPlan(tuple(buffers), stats, {t.id: TaskBuffers((), ()) for t in schedule.tasks}, schedule)


def make_sim(schedule: Schedule, plan: MemoryPlan, dma_slowdown: float = 1.15) -> SimResult:
    """Replay each engine's program (wait, task, signal) with DMA transfers ``dma_slowdown`` times longer."""
    order = schedule.engine_tasks()
    cross_consumers: dict[int, list[Task]] = {t.id: [] for t in schedule.tasks}
    for u in schedule.tasks:
        for d in u.deps:
            if schedule.task(d).engine != u.engine:
                cross_consumers[d].append(u)
    end: dict[int, float] = {}
    events: list[SimEvent] = []
    edges: list[SyncEdge] = []
    signal_at: dict[int, tuple[str, int, float]] = {}
    free = {e: 0.0 for e in order}
    index = {e: 0 for e in order}
    for t in sorted(schedule.tasks, key=lambda t: (t.start_ns, t.id)):  # start order respects every dep
        e = t.engine
        for d in t.deps:
            dep = schedule.task(d)
            if dep.engine != e:
                src_engine, src_index, ready = signal_at[d]
                wait_end = max(free[e], ready + SYNC_NS)
                events.append(SimEvent(e, index[e], "wait", f"sem{d}", free[e], wait_end))
                edges.append(SyncEdge(f"sem{d}", src_engine, src_index, e, index[e], ready))
                free[e], index[e] = wait_end, index[e] + 1
        ready = max([free[e]] + [end[d] for d in t.deps])
        scale = dma_slowdown if t.kind == "transfer" else 1.0
        stop = ready + t.duration_ns * scale
        args = {"op": t.op} if t.kind == "compute" else {"bytes": t.bytes, "value": t.value}
        name = f"node {t.node}" if t.kind == "compute" else f"copy {t.value} {t.src}->{t.dst}"
        events.append(SimEvent(e, index[e], "compute" if t.kind == "compute" else "dma", name, ready, stop,
                               t.start_ns, t.end_ns, t.id, args))
        end[t.id] = free[e] = stop
        index[e] += 1
        if cross_consumers[t.id]:
            events.append(SimEvent(e, index[e], "signal", f"sem{t.id}", stop, stop))
            signal_at[t.id] = (e, index[e], stop)
            index[e] += 1
    makespan = max(end.values())
    stretch = makespan / schedule.makespan_ns     # buffers live proportionally longer in the slower replay
    usage: dict[str, list[tuple[float, int]]] = {}
    for m in plan.stats:
        deltas: dict[float, int] = {}
        for b in plan.buffers:
            if b.memory == m:
                deltas[b.start_ns * stretch] = deltas.get(b.start_ns * stretch, 0) + b.size
                deltas[b.end_ns * stretch] = deltas.get(b.end_ns * stretch, 0) - b.size
        live, steps = 0, []
        for time in sorted(deltas):
            live += deltas[time]
            steps.append((time, live))
        usage[m] = steps
    return SimResult(makespan, schedule.makespan_ns, tuple(events), tuple(edges),
                     {m: tuple(s) for m, s in usage.items()})


def make_all(n_nodes: int = 12) -> tuple[Graph, Target, Schedule, MemoryPlan, SimResult]:
    target = make_target()
    graph = make_graph(n_nodes)
    schedule = make_schedule(graph, target)
    plan = make_plan(graph, schedule, target)
    return graph, target, schedule, plan, make_sim(schedule, plan)


def test_hand_built_schedule_obeys_the_execution_model() -> None:
    graph, target, schedule, plan, sim = make_all(24)
    for t in schedule.tasks:
        for d in t.deps:
            dep = schedule.task(d)
            assert t.start_ns >= dep.end_ns + (SYNC_NS if dep.engine != t.engine else 0)
    for engine, tasks in schedule.engine_tasks().items():
        assert all(a.end_ns <= b.start_ns for a, b in zip(tasks, tasks[1:])), engine
    assert {t.engine for t in schedule.tasks if t.kind == "transfer"} <= set(target.dmas)
    assert sim.makespan_ns > schedule.makespan_ns  # slower DMA can only delay the replay
    assert all(b.end_ns > b.start_ns for b in plan.buffers)
