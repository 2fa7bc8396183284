"""A small reference planner for tests and benchmarks of codegen and the simulator (test scaffolding).

Given a placement it builds a real Schedule with the scheduler's own list scheduler and execution model
(``hetc.schedule.schedule_placement``: nodes in topological order, timed by ``hetc.schedule.tasks``), binds
tasks to buffers as the memory planner does (``hetc.memory.lifetimes.build_table``), optionally shares storage
by the planner's view rule (``hetc.memory.aliasing``), and packs with a deliberately simple first fit (or a
bump allocator for very large graphs), so that offsets stay predictable for the broken-plan tests. The real
pipeline uses ``hetc.memory.plan_memory``; this exists so the back end can be exercised on hand-made graphs.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from hetc.ir import Graph, Node
from hetc.memory.aliasing import resolve_aliases
from hetc.memory.artifact import Buffer, MemoryPlan, MemoryStats, TaskBuffers
from hetc.memory.lifetimes import build_table
from hetc.memory.reuse import reuse_dependencies
from hetc.schedule.api import schedule_placement
from hetc.schedule.artifact import SolverStats
from hetc.target.target import Target

Duration = Callable[[Node, str], int]


def plan_by_hand(graph: Graph, target: Target, placement: dict[int, str], duration: Duration,
                 reuse: bool = True, alias: bool = True) -> MemoryPlan:
    """Schedule ``graph`` with the given node -> device placement and pack its buffers."""
    schedule = schedule_placement(graph, target, placement, durations=duration,
                                  stats=SolverStats("hand", "HEURISTIC", 0, 0, 0.0))
    table = build_table(graph, schedule, target)
    lifetimes = table.lifetimes(schedule)
    # views only (Reshape-like ops share their input's bytes): the elementwise rule would leave the toy plans
    # no address reuse between engines to test
    owners = resolve_aliases(table, schedule, graph.node_map(), overwrite=False) if alias else {}
    buffers = [Buffer(id=bid, value=spec.value, memory=spec.memory, offset=0, size=max(spec.size, 1),
                      start_ns=lifetimes[bid][0], end_ns=lifetimes[bid][1], kind=spec.kind,
                      alias_of=owners.get(bid), dtype=spec.dtype, shape=spec.shape)
               for bid, spec in table.buffers.items()]
    packed = _pack(buffers, target, reuse)
    task_buffers = {t.id: TaskBuffers(tuple(table.reads.get(t.id, ())), tuple(table.writes.get(t.id, ())))
                    for t in schedule.tasks}
    constants = max([b.offset + b.size for b in packed if b.kind == "constant"], default=0)
    plan = MemoryPlan(buffers=tuple(packed), stats=_stats(packed, target), task_buffers=task_buffers,
                      schedule=schedule, constants_bytes=constants)
    return replace(plan, reuse_deps=reuse_dependencies(plan))   # the planner's rule: codegen orders these


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
