"""Re-timing a schedule after tasks were inserted or made to wait, keeping every engine's program order.

The rule is ``hetc.schedule.tasks.earliest_times`` (the one statement of the execution model: engine order,
dependencies, the semaphore cost across engines), with each task's previous start as its release time:
re-timing only ever delays, so the untouched part of a schedule stays as planned. Durations do not change.
"""
from __future__ import annotations

import math
from dataclasses import replace

from hetc.schedule.artifact import Task
from hetc.schedule.tasks import TaskSpec, earliest_times


def engine_order(tasks: list[Task]) -> dict[str, list[int]]:
    """Program order of each engine: by planned start (ties: end, then id), as ``Schedule.engine_tasks``."""
    return _lanes(_by_start(tasks))


def _by_start(tasks: list[Task]) -> list[Task]:
    return sorted(tasks, key=lambda t: (t.start_ns, t.end_ns, t.id))


def _lanes(ordered: list[Task]) -> dict[str, list[int]]:
    lanes: dict[str, list[int]] = {}
    for t in ordered:
        lanes.setdefault(t.engine, []).append(t.id)
    return lanes


def retime(tasks: list[Task], sync_ns: float) -> tuple[Task, ...] | None:
    """Tasks with start/end pushed to satisfy dependencies and engine order (read from the planned starts).
    Returns None when the dependencies contradict the engine order (a cycle). Tasks that keep their times
    are returned as they are."""
    specs = {t.id: TaskSpec(t.id, t.engine, t.duration_ns, t.deps) for t in tasks}
    ordered = _by_start(tasks)      # the planned order: topological, as re-timing only adds forward edges
    try:
        times = earliest_times(specs, _lanes(ordered), math.ceil(sync_ns), {t.id: t.start_ns for t in tasks},
                               order_hint=[t.id for t in ordered])
    except ValueError:
        return None
    return tuple(t if times[t.id][0] == t.start_ns else replace(t, start_ns=times[t.id][0], end_ns=times[t.id][1])
                 for t in tasks)
