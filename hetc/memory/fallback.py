"""Moving a node off a scratchpad device when spilling cannot make its memory fit, and rescheduling.

The node that runs at the overflowing instant with the largest operands moves to the first device (in the
target's priority order) that supports it and is homed in another memory — in the end the CPU, which runs
everything from DRAM. The graph is then rescheduled with the new placement by the scheduler's own list
scheduler (``hetc.schedule.schedule_placement``: nodes in the order the previous schedule ran them, timed by
``hetc.schedule.tasks``, the one statement of the execution model), keeping every other node's device and
duration. The planner then starts over on the new schedule.
"""
from __future__ import annotations

import math
from dataclasses import replace

from hetc.ir import Graph, Node
from hetc.schedule.api import schedule_placement
from hetc.schedule.artifact import Schedule
from hetc.target.target import Target


def move_node_off(graph: Graph, schedule: Schedule, target: Target, memory: str, t: int,
                  banned: frozenset[tuple[int, str]] = frozenset()) -> tuple[Schedule, dict] | None:
    """A rescheduled copy of ``schedule`` with one node moved out of ``memory``, and a record of the move;
    None when no node running at ``t`` there can run anywhere else. ``banned`` holds (node, device) pairs
    a node was already moved off, so that nodes never move back and forth."""
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

        stats = replace(schedule.stats, details={**schedule.stats.details, "rescheduled_by": "memory planner"})
        rescheduled = replace(schedule_placement(graph, target, placement, order, duration, stats),
                              lower_bound_ns=schedule.lower_bound_ns)   # the bound holds for any placement
        move = {"node": node.id, "op": node.op_type, "from": task.engine, "to": device, "memory": memory,
                "at_ns": t}
        return rescheduled, move
    return None


def _operand_bytes(node: Node) -> int:
    return sum(v.nbytes for v in node.present_inputs) + sum(v.nbytes for v in node.outputs)
