"""Moving a node off a scratchpad device when spilling cannot make its memory fit (placeholder until the
scheduler's public API lands)."""
from __future__ import annotations

from hetc.ir import Graph
from hetc.schedule.artifact import Schedule
from hetc.target.target import Target


def move_node_off(graph: Graph, schedule: Schedule, target: Target, memory: str,
                  t: int) -> tuple[Schedule, dict] | None:
    return None
