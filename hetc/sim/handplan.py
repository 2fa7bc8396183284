"""A small reference planner for tests and benchmarks of codegen and the simulator.

Given a placement, it builds a real Schedule (ASAP list scheduling in topological order, transfers along
``target.route``, one copy of a value per memory) and a real MemoryPlan (first-fit packing with reuse, or a bump
allocator for very large graphs, optional in-place aliasing of Reshape-like ops). It is deliberately simple: the
real pipeline uses ``hetc.schedule.schedule`` and ``hetc.memory.plan_memory``; this exists so the back end can be
exercised on hand-made graphs with nothing else in the loop.
"""
from __future__ import annotations

from typing import Callable

from hetc.ir import Graph, Node, Value
from hetc.memory.artifact import Buffer, MemoryPlan, MemoryStats, TaskBuffers
from hetc.schedule.artifact import Schedule, SolverStats, Task
from hetc.target.target import Target

ALIASABLE = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
Duration = Callable[[Node, str], int]


def plan_by_hand(graph: Graph, target: Target, placement: dict[int, str], duration: Duration,
                 reuse: bool = True, alias: bool = True) -> MemoryPlan:
    """Schedule ``graph`` with the given node -> device placement and pack its buffers."""
    tasks: list[Task] = []
    free_at = dict.fromkeys(target.engines, 0)
    writer: dict[tuple[str, str], Task | None] = {}  # (value, memory) -> task that brings it there
    for v in graph.values.values():
        if v.is_const or v.producer is None:
            writer[(v.name, target.dram)] = None
    reads: dict[int, tuple[str | None, ...]] = {}
    writes: dict[int, tuple[str, ...]] = {}
    readers: dict[str, list[Task]] = {}
    where_made: dict[str, str] = {v.name: target.dram for v in graph.values.values()
                                  if v.is_const or v.producer is None}

    def add(kind: str, engine: str, deps: list[Task], length: int, **kw: object) -> Task:
        ready = max([free_at[engine]] + [d.end_ns + (0 if d.engine == engine else int(target.sync_ns))
                                         for d in deps])
        task = Task(id=len(tasks), kind=kind, engine=engine, start_ns=ready, end_ns=ready + max(length, 1),
                    deps=tuple(sorted({d.id for d in deps})), **kw)  # type: ignore[arg-type]
        tasks.append(task)
        free_at[engine] = task.end_ns
        return task

    def bring(value: Value, memory: str) -> None:
        if (value.name, memory) in writer:
            return
        for a, b in target.route(where_made[value.name], memory):
            if (value.name, b) in writer:
                continue
            engine = min(target.engines_between(a, b), key=lambda e: (free_at[e.name], e.name)).name
            src = writer[(value.name, a)]
            t = add("transfer", engine, [src] if src else [], int(target.transfer_ns(value.nbytes, engine)),
                    value=value.name, src=a, dst=b, bytes=value.nbytes)
            reads[t.id], writes[t.id] = (f"{value.name}@{a}",), (f"{value.name}@{b}",)
            readers.setdefault(f"{value.name}@{a}", []).append(t)
            writer[(value.name, b)] = t

    for node in graph.topo_order():
        device = placement[node.id]
        home = target.home(device)
        for v in node.present_inputs:
            bring(v, home)
        deps = [writer[(v.name, home)] for v in node.present_inputs]
        t = add("compute", device, [d for d in deps if d is not None], duration(node, device),
                node=node.id, op=node.op_type)
        reads[t.id] = tuple(f"{v.name}@{home}" if v is not None else None for v in node.inputs)
        writes[t.id] = tuple(f"{v.name}@{home}" for v in node.outputs)
        for v in node.present_inputs:
            readers.setdefault(f"{v.name}@{home}", []).append(t)
        for v in node.outputs:
            writer[(v.name, home)] = t
            where_made[v.name] = home
    for v in graph.outputs:
        bring(v, target.dram)

    schedule = Schedule(tasks=tuple(tasks), placement=dict(placement),
                        stats=SolverStats("hand", "HEURISTIC", max(t.end_ns for t in tasks), 0, 0.0),
                        lower_bound_ns=0)
    buffers = _buffers(graph, target, schedule, writer, readers, alias)
    packed = _pack(buffers, target, reuse)
    task_buffers = {tid: TaskBuffers(reads[tid], writes[tid]) for tid in reads}
    constants = max([b.offset + b.size for b in packed if b.kind == "constant"], default=0)
    return MemoryPlan(buffers=tuple(packed), stats=_stats(packed, target), task_buffers=task_buffers,
                      schedule=schedule, constants_bytes=constants)


def _buffers(graph: Graph, target: Target, schedule: Schedule, writer: dict[tuple[str, str], Task | None],
             readers: dict[str, list[Task]], alias: bool) -> list[Buffer]:
    outputs = {v.name for v in graph.outputs}
    inputs = {v.name for v in graph.inputs}
    out: list[Buffer] = []
    for (name, memory), w in writer.items():
        v = graph.values[name]
        bid = f"{name}@{memory}"
        end = max([r.end_ns for r in readers.get(bid, [])] + [w.end_ns if w else 0])
        if name in outputs and memory == target.dram:
            end = schedule.makespan_ns
        kind = ("constant" if v.is_const and w is None else "input" if name in inputs and w is None
                else "output" if name in outputs and memory == target.dram
                else "copy" if w is not None and w.kind == "transfer" else "activation")
        alias_of = None
        if (alias and w is not None and w.kind == "compute" and w.op in ALIASABLE and v.producer is not None
                and v.producer.inputs[0] is not None):
            src = v.producer.inputs[0]
            if (not src.is_const and src.producer is not None and len(src.consumers) == 1
                    and src.name not in outputs):
                alias_of = f"{src.name}@{memory}"
        out.append(Buffer(id=bid, value=name, memory=memory, offset=0, size=max(v.nbytes, 1),
                          start_ns=w.start_ns if w else 0, end_ns=max(end, 1), kind=kind, alias_of=alias_of,
                          dtype=v.dtype, shape=tuple(v.shape)))
    return out


def _pack(buffers: list[Buffer], target: Target, reuse: bool) -> list[Buffer]:
    """Offsets: constants at the bottom of DRAM, then first fit over (address, lifetime) per memory."""
    by_id = {b.id: b for b in buffers}

    def root(b: Buffer) -> Buffer:
        while b.alias_of is not None:
            b = by_id[b.alias_of]
        return b
    hull: dict[str, list[int]] = {}
    for b in buffers:
        span = hull.setdefault(root(b).id, [b.start_ns, b.end_ns])
        span[0], span[1] = min(span[0], b.start_ns), max(span[1], b.end_ns)
    offsets: dict[str, int] = {}
    tops: dict[str, int] = {}
    placed: dict[str, list[tuple[int, int, int, int]]] = {}
    roots = sorted((b for b in buffers if b.alias_of is None),
                   key=lambda b: (b.kind != "constant", hull[b.id][0], b.id))
    for b in roots:
        align = target.memories[b.memory].alignment
        start, end = hull[b.id]
        live = b.kind in ("constant", "input")  # never reused: read-only weights and caller-written inputs
        if reuse and not live:
            busy = sorted((lo, hi) for lo, hi, s, e in placed.get(b.memory, []) if s < end and start < e)
            offset = 0
            for lo, hi in busy:
                if offset + b.size <= lo:
                    break
                offset = max(offset, -(-hi // align) * align)
        else:
            offset = -(-tops.get(b.memory, 0) // align) * align
        offsets[b.id] = offset
        tops[b.memory] = max(tops.get(b.memory, 0), offset + b.size)
        placed.setdefault(b.memory, []).append((offset, offset + b.size, start, end) if not live
                                               else (offset, offset + b.size, 0, 1 << 62))
    return [Buffer(**{**b.__dict__, "offset": offsets[root(b).id]}) for b in buffers]


def _stats(buffers: list[Buffer], target: Target) -> dict[str, MemoryStats]:
    stats: dict[str, MemoryStats] = {}
    for name, memory in target.memories.items():
        mine = [b for b in buffers if b.memory == name and b.alias_of is None]
        events = sorted([(b.start_ns, b.size) for b in mine] + [(b.end_ns, -b.size) for b in mine],
                        key=lambda e: (e[0], e[1]))
        live = peak_live = 0
        for _, delta in events:
            live += delta
            peak_live = max(peak_live, live)
        stats[name] = MemoryStats(peak_bytes=max((b.offset + b.size for b in mine), default=0),
                                  lower_bound_bytes=peak_live, capacity_bytes=memory.size)
    return stats


def first_candidate_placement(graph: Graph, target: Target) -> dict[int, str]:
    """Each node on the first device (in the target's priority order) that supports it."""
    placement = {}
    for node in graph.topo_order():
        devices = target.candidates(node)
        placement[node.id] = devices[0] if devices else next(iter(target.devices))
    return placement


def cost_duration(target: Target) -> Duration:
    """Durations from the target's roofline cost model, in whole ns."""
    return lambda node, device: int(round(target.cost(node, device)))
