"""Re-timing a schedule after tasks were inserted or made to wait, keeping every engine's program order.

The rule is ``hetc.schedule.tasks.earliest_times`` (the one statement of the execution model: engine order,
dependencies, the semaphore cost across engines), with each task's previous start as its release time:
re-timing only ever delays, so the untouched part of a schedule stays as planned. Durations do not change
inside the repairs; ``retime_shared`` times the schedule that ships once more with DRAM's bandwidth shared
(``hetc.schedule.dram``), as the scheduler and the simulator time it, and with no planned start holding a task
back, as the bundle runs it.
"""
from __future__ import annotations

import bisect
import math
from operator import attrgetter
from dataclasses import replace

from hetc.schedule.artifact import Schedule, Task, in_program_order
from hetc.schedule.tasks import TaskSpec, earliest_times, handoff_ns, shared_times


def engine_order(tasks: list[Task]) -> dict[str, list[int]]:
    """Program order of each engine (``hetc.schedule.artifact.in_program_order``), as task ids."""
    return _lanes(in_program_order(tasks))


def _lanes(ordered: list[Task]) -> dict[str, list[int]]:
    lanes: dict[str, list[int]] = {}
    for t in ordered:
        lanes.setdefault(t.engine, []).append(t.id)
    return lanes


def retime(tasks: list[Task], sync_ns: float, timed: Schedule | tuple[Task, ...] | None = None
           ) -> tuple[Task, ...] | None:
    """Tasks with start/end pushed to satisfy dependencies and engine order (read from the planned starts).
    Returns None when the dependencies contradict the engine order (a cycle). Tasks that keep their times
    are returned as they are.

    ``timed`` is the schedule (or its tasks) ``tasks`` was edited from, which must satisfy the rule itself (a
    scheduler's or a re-timed schedule does): then the tasks before the earliest edited one keep their times,
    and of the rest only what the edits reach is recomputed (``_changed_only``), with the same result. On
    VGG-19's 5,000 tasks a repair reaches a few dozen."""
    sync = math.ceil(sync_ns)
    ordered = in_program_order(tasks)   # the planned order: topological, as re-timing only adds forward edges
    first = 0
    if timed is not None:
        was = timed.by_id() if isinstance(timed, Schedule) else {t.id: t for t in timed}
        edited = {t.id: t for t in tasks if was.get(t.id) is not t}
        if not edited:
            return tuple(tasks)
        earliest = min(t.start_ns for t in edited.values())
        first = bisect.bisect_left(ordered, earliest, key=attrgetter("start_ns"))
        if any(not edited.keys().isdisjoint(t.deps) for t in ordered[:first]):
            first = 0               # an earlier task waits for an edited one, which now comes after it
        else:
            times = _changed_only(ordered, first, sync, was, edited)
            if times is not None:
                return tuple(t if times.get(t.id, t.start_ns) == t.start_ns else
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
                release[t.id] = max(release[t.id], fixed[d].end_ns + handoff_ns(fixed[d].engine, t.engine, sync))
    specs = {t.id: TaskSpec(t.id, t.engine, t.duration_ns, tuple(d for d in t.deps if d not in fixed))
             for t in rest}
    try:
        times = earliest_times(specs, _lanes(rest), sync, release, order_hint=[t.id for t in rest])
    except ValueError:
        return None
    return tuple(t if t.id in fixed or times[t.id][0] == t.start_ns else
                 replace(t, start_ns=times[t.id][0], end_ns=times[t.id][1]) for t in tasks)


def _changed_only(ordered: list[Task], first: int, sync_ns: int, was: dict[int, Task],
                  edited: dict[int, Task]) -> dict[int, int] | None:
    """Starts by the rule of ``earliest_times`` of the tasks from ``first`` on in ``ordered`` (those before
    keep their times: they start before every edited task, ``edited`` by id, and wait for none), recomputed
    only where an edit may move them: an edited task (not the same object as in the schedule it was edited
    from, ``was`` by id), or one whose engine predecessor or one of whose dependencies now ends at another
    time. Any other task keeps its start: its release is that start, and that schedule satisfying the rule
    puts every constraint it meets at or before it (an unchanged task that is now its engine predecessor ran
    before it there too, since unchanged tasks keep their order). Past the last edited task, once the tasks
    start after every moved one ends (and its semaphore), nothing moves any more: the walk stops there, and
    the tasks not in the answer keep their starts. None when a dependency comes later in the order (a
    postponed copy that now ends after its reader's planned start: the caller takes the general path)."""
    rest = ordered[first:]
    earliest = rest[0].start_ns
    last: dict[str, int] = {}
    engines = {t.engine for t in rest}
    for t in reversed(ordered[:first]):            # each engine's last task before the edits
        if t.engine in engines and t.engine not in last:
            last[t.engine] = t.id
            if len(last) == len(engines):
                break
    ends: dict[int, int] = {}
    starts: dict[int, int] = {}
    moved: set[int] = set()
    unseen_edits, horizon = len(edited), earliest

    def end_of(d: int) -> int | None:
        """When ``d`` ends, if it comes before in the order (met already, or a task before ``first``)."""
        end = ends.get(d)
        if end is None and d not in edited and d in was and was[d].start_ns < earliest:
            end = was[d].end_ns
        return end

    for t in rest:
        k = t.id
        if not unseen_edits and t.start_ns >= horizon:
            break
        before = last.get(t.engine)
        last[t.engine] = k
        is_edited = k in edited
        unseen_edits -= is_edited
        # Unchanged tasks keep their order: only an edited task, or a wait for one, can point backwards.
        if (is_edited or not edited.keys().isdisjoint(t.deps)) and any(end_of(d) is None for d in t.deps):
            return None                  # a predecessor comes later: the order is no longer topological
        if not is_edited and before not in moved and moved.isdisjoint(t.deps):
            ends[k] = t.end_ns
            continue
        start = t.start_ns
        if before is not None:
            start = max(start, end_of(before))
        for d in t.deps:
            engine = (edited[d] if d in edited else was[d]).engine
            end = end_of(d)
            start = max(start, end + handoff_ns(engine, t.engine, sync_ns))
        starts[k], ends[k] = start, start + t.duration_ns
        old = was.get(k)
        if old is None or ends[k] != old.end_ns:
            moved.add(k)
            horizon = max(horizon, ends[k] + sync_ns)
    return starts


def retime_shared(tasks: tuple[Task, ...], sync_ns: float, asks: dict[int, int],
                  extra_deps: dict[int, tuple[int, ...]]) -> tuple[Task, ...] | None:
    """``tasks`` timed with DRAM's bandwidth shared among the tasks streaming through it (``asks``: task id ->
    share, ``hetc.schedule.dram.task_asks``), each from its own duration (``Task.own_ns``), in its engine's
    program order, as soon as its dependencies allow; ``extra_deps`` (task id -> tasks it waits for too: the
    memory plan's address reuse) hold as dependencies. The repairs re-time with fixed durations, so a copy
    they moved next to another DRAM user was planned as fast as alone; and they delay by start times (a
    prefetch released at the compute before its reader) that no semaphore states, which the bundle does not
    wait for: each of its engines starts a task when the one before it has ended and its semaphores are
    signalled. The address reuse keeps every offset valid at any such timing. This is the timing that ships.
    Tasks whose times stay are returned as they are; None on a cycle."""
    specs = {t.id: TaskSpec(t.id, t.engine, t.own_ns, tuple(dict.fromkeys(t.deps + extra_deps.get(t.id, ()))))
             for t in tasks}
    try:
        times = shared_times(specs, engine_order(list(tasks)), math.ceil(sync_ns), {}, asks)
    except ValueError:
        return None
    out = []
    for t in tasks:
        start, end = times[t.id]
        if (start, end) == (t.start_ns, t.end_ns):
            out.append(t)
        else:
            own = t.own_ns
            out.append(replace(t, start_ns=start, end_ns=end, work_ns=own if own != end - start else None))
    return tuple(out)
