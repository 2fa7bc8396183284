"""Re-timing a schedule after tasks were inserted or made to wait, keeping every engine's program order.

The rule is ``hetc.schedule.tasks.earliest_times`` (the one statement of the execution model: engine order,
dependencies, the semaphore cost across engines), with each task's previous start as its release time:
re-timing only ever delays, so the untouched part of a schedule stays as planned. Durations do not change.
"""
from __future__ import annotations

import bisect
import math
from operator import attrgetter
from dataclasses import replace

from hetc.schedule.artifact import Task
from hetc.schedule.tasks import TaskSpec, earliest_times


def engine_order(tasks: list[Task]) -> dict[str, list[int]]:
    """Program order of each engine: by planned start (ties: end, then id), as ``Schedule.engine_tasks``."""
    return _lanes(_by_start(tasks))


def _by_start(tasks: list[Task]) -> list[Task]:
    return sorted(tasks, key=attrgetter("start_ns", "end_ns", "id"))


def _lanes(ordered: list[Task]) -> dict[str, list[int]]:
    lanes: dict[str, list[int]] = {}
    for t in ordered:
        lanes.setdefault(t.engine, []).append(t.id)
    return lanes


def retime(tasks: list[Task], sync_ns: float, timed: tuple[Task, ...] | None = None) -> tuple[Task, ...] | None:
    """Tasks with start/end pushed to satisfy dependencies and engine order (read from the planned starts).
    Returns None when the dependencies contradict the engine order (a cycle). Tasks that keep their times
    are returned as they are.

    ``timed`` is the schedule ``tasks`` was edited from, which must satisfy the rule itself (a scheduler's or
    a re-timed schedule does): then the tasks before the earliest edited one keep their times, and of the
    rest only what the edits reach is recomputed (``_changed_only``), with the same result. On VGG-19's 5,000
    tasks a repair reaches a few dozen."""
    sync = math.ceil(sync_ns)
    ordered = _by_start(tasks)      # the planned order: topological, as re-timing only adds forward edges
    was = {t.id: t for t in timed} if timed is not None else {}
    first = _untouched(ordered, was) if timed is not None else None
    if first is None:
        first = 0
    else:
        times = _changed_only(ordered, first, sync, was)
        if times is not None:
            return tuple(t if times[t.id] == t.start_ns else
                         replace(t, start_ns=times[t.id], end_ns=times[t.id] + t.duration_ns) for t in tasks)
    # The general rule on the tasks from ``first`` on; those before it are fixed and only release them.
    fixed = {t.id: t for t in ordered[:first]}
    rest = ordered[first:]
    release = {t.id: t.start_ns for t in rest}
    last: dict[str, Task] = {t.engine: t for t in fixed.values()}
    for t in rest:
        before = last.pop(t.engine, None)
        if before is not None:
            release[t.id] = max(release[t.id], before.end_ns)
        for d in t.deps:
            if d in fixed:
                release[t.id] = max(release[t.id], fixed[d].end_ns + (0 if fixed[d].engine == t.engine else sync))
    specs = {t.id: TaskSpec(t.id, t.engine, t.duration_ns, tuple(d for d in t.deps if d not in fixed))
             for t in rest}
    try:
        times = earliest_times(specs, _lanes(rest), sync, release, order_hint=[t.id for t in rest])
    except ValueError:
        return None
    return tuple(t if t.id in fixed or times[t.id][0] == t.start_ns else
                 replace(t, start_ns=times[t.id][0], end_ns=times[t.id][1]) for t in tasks)


def _untouched(ordered: list[Task], was: dict[int, Task]) -> int | None:
    """How many tasks of ``ordered`` start before the earliest edited one (not the same object as in the
    schedule it was edited from, ``was`` by id): they keep their times. None when one of them waits for an
    edited task, which now comes after it: then nothing is known to keep its time."""
    edited = {t.id for t in ordered if was.get(t.id) is not t}
    if not edited:
        return len(ordered)
    first = bisect.bisect_left(ordered, min(t.start_ns for t in ordered if t.id in edited),
                               key=attrgetter("start_ns"))
    if not edited.isdisjoint(set().union(*(t.deps for t in ordered[:first]))):
        return None
    return first


def _changed_only(ordered: list[Task], first: int, sync_ns: int, was: dict[int, Task]) -> dict[int, int] | None:
    """Starts by the rule of ``earliest_times`` along ``ordered``, the first ``first`` tasks kept as they are,
    the others recomputed only where an edit may move them: a task that is not the same object as in
    the schedule it was edited from (``was``, by id), or whose engine predecessor or one of whose dependencies
    now ends at another time. Any other task keeps its start: its release is that start, and that schedule
    satisfying the rule puts every constraint it meets at or before it (an unchanged task that is now its
    engine predecessor ran before it there too, since unchanged tasks keep their order). None when a
    dependency comes later in the order (a postponed copy that now ends after its reader's planned start:
    the caller takes the general path)."""
    engine = {t.id: t.engine for t in ordered}
    prefix = ordered[:first]
    last: dict[str, int] = {t.engine: t.id for t in prefix}
    ends: dict[int, int] = {t.id: t.end_ns for t in prefix}
    starts: dict[int, int] = {t.id: t.start_ns for t in prefix}
    moved: set[int] = set()
    seen: set[int] = set(starts)
    for t in ordered[first:]:
        k = t.id
        before = last.get(t.engine)
        last[t.engine] = k
        if not seen.issuperset(t.deps):
            return None                  # a predecessor comes later: the order is no longer topological
        seen.add(k)
        if was.get(k) is t and before not in moved and moved.isdisjoint(t.deps):
            starts[k], ends[k] = t.start_ns, t.end_ns
            continue
        start = t.start_ns
        if before is not None:
            start = max(start, ends[before])
        for d in t.deps:
            end = ends[d]
            start = max(start, end if engine[d] == t.engine else end + sync_ns)
        starts[k], ends[k] = start, start + t.duration_ns
        old = was.get(k)
        if old is None or ends[k] != old.end_ns:
            moved.add(k)
    return starts
