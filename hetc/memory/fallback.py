"""Moving a node off a scratchpad device when spilling cannot make its memory fit, and rescheduling.

The node that runs at the overflowing instant with the largest operands moves to the first device (in the
target's priority order) that supports it and is homed in another memory — in the end the CPU, which runs
everything from DRAM. The schedule is then rebuilt by list scheduling with the new placement: nodes in the
order the previous schedule ran them, each on its device as early as its engine and its operands allow,
values copied along ``target.route`` exactly once per memory (an intermediate DRAM copy is shared), graph
outputs brought back to DRAM. The planner then starts over on the new schedule. A graph with alias nodes
(hetc.ir.tiles) is not rescheduled here.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

from hetc.ir import Graph, Node, Value
from hetc.ir.tiles import is_alias
from hetc.schedule.artifact import Schedule, SolverStats, Task
from hetc.target.target import Target


def move_node_off(graph: Graph, schedule: Schedule, target: Target, memory: str, t: int,
                  banned: frozenset[tuple[int, str]] = frozenset()) -> tuple[Schedule, dict] | None:
    """A rescheduled copy of ``schedule`` with one node moved out of ``memory``, and a record of the move;
    None when no node running at ``t`` there can run anywhere else. ``banned`` holds (node, device) pairs
    a node was already moved off, so that nodes never move back and forth."""
    if any(is_alias(n) for n in graph):
        # This list scheduler does not know alias nodes (not tasks; hetc.schedule.tasks states how they
        # run), so it cannot reschedule a tiled graph: the planner reports the overflow instead.
        return None
    nodes = graph.node_map()
    homed = [x for x in schedule.tasks if x.kind == "compute" and target.home(x.engine) == memory]
    running = [x for x in homed if x.start_ns <= t < x.end_ns] or \
        sorted((x for x in homed if x.start_ns >= t), key=lambda x: x.start_ns)[:1]
    running.sort(key=lambda x: (-_operand_bytes(nodes[x.node]), x.id))
    for task in running:
        node = nodes[task.node]
        device = next((d for d in target.candidates(node)
                       if target.home(d) != memory and (node.id, d) not in banned), None)
        if device is None:
            continue
        placement = {**schedule.placement, node.id: device}
        order = [x.node for x in sorted(schedule.tasks, key=lambda x: (x.start_ns, x.id)) if x.kind == "compute"]
        kept = {x.node: x.duration_ns for x in schedule.tasks if x.kind == "compute"}

        def duration(n: Node, d: str) -> int:
            return kept[n.id] if d == schedule.placement.get(n.id) else max(1, math.ceil(target.cost(n, d)))

        rescheduled = replace(list_schedule(graph, target, placement, order, duration, schedule.stats),
                              lower_bound_ns=schedule.lower_bound_ns)   # the bound holds for any placement
        move = {"node": node.id, "op": node.op_type, "from": task.engine, "to": device, "memory": memory,
                "at_ns": t}
        return rescheduled, move
    return None


def _operand_bytes(node: Node) -> int:
    return sum(v.nbytes for v in node.present_inputs) + sum(v.nbytes for v in node.outputs)


def list_schedule(graph: Graph, target: Target, placement: dict[int, str], order: list[int],
                  duration: Callable[[Node, str], int], stats: SolverStats | None = None) -> Schedule:
    """List scheduling with a fixed placement and node order (which must be topological)."""
    nodes = graph.node_map()
    tasks: list[Task] = []
    free: dict[str, int] = {}
    copies: dict[tuple[str, str], int | None] = {}   # (value, memory) -> task that wrote it (None: at t=0)
    sync = math.ceil(target.sync_ns)

    def add(kind: str, engine: str, deps: list[int], length: int, **fields) -> int:
        ready = max((tasks[d].end_ns + (sync if tasks[d].engine != engine else 0) for d in deps), default=0)
        start = max(free.get(engine, 0), ready)
        tasks.append(Task(len(tasks), kind, engine, start, start + length, tuple(deps), **fields))
        free[engine] = start + length
        return len(tasks) - 1

    def bring(v: Value, memory: str) -> int | None:
        if (v.name, memory) not in copies:
            origin = next(m for (name, m) in copies if name == v.name)
            for src, dst in target.route(origin, memory):
                if (v.name, dst) in copies:
                    continue                                   # the shared intermediate DRAM copy
                engines = target.engines_between(src, dst)
                engine = min(engines, key=lambda e: (free.get(e.name, 0), e.name)).name
                dep = copies[(v.name, src)]
                copies[(v.name, dst)] = add("transfer", engine, [dep] if dep is not None else [],
                                            max(1, math.ceil(target.transfer_ns(v.nbytes, engine))),
                                            value=v.name, src=src, dst=dst, bytes=v.nbytes)
        return copies[(v.name, memory)]

    for v in [*graph.inputs, *graph.constants]:
        copies[(v.name, target.dram)] = None
    for node_id in order:
        node = nodes[node_id]
        device = placement[node_id]
        memory = target.home(device)
        deps = sorted({d for v in node.present_inputs if (d := bring(v, memory)) is not None})
        tid = add("compute", device, deps, duration(node, device), node=node.id, op=node.op_type)
        for v in node.outputs:
            copies[(v.name, memory)] = tid
    for v in graph.outputs:
        bring(v, target.dram)
    makespan = max((x.end_ns for x in tasks), default=0)
    base = stats or SolverStats("list", "HEURISTIC", makespan, 0, 0.0)
    stats = replace(base, objective_ns=makespan, details={**base.details, "rescheduled_by": "memory planner"})
    return Schedule(tuple(tasks), dict(placement), stats, 0)
