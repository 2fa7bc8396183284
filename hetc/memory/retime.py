"""Re-timing a schedule after tasks were inserted, keeping every engine's program order.

Each task starts at the latest of: its previous start (a release time: re-timing only ever delays, so the
untouched part of a schedule stays as planned), the end of the previous task on its engine, and the end of each
dependency (plus the semaphore cost when the dependency ran on another engine). Durations do not change.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

from hetc.schedule.artifact import Task


def engine_order(tasks: list[Task]) -> dict[str, list[int]]:
    """Program order of each engine: by planned start (ties: end, then id), as ``Schedule.engine_tasks``."""
    lanes: dict[str, list[int]] = {}
    for t in sorted(tasks, key=lambda t: (t.start_ns, t.end_ns, t.id)):
        lanes.setdefault(t.engine, []).append(t.id)
    return lanes


def retime(tasks: list[Task], sync_ns: float) -> tuple[Task, ...] | None:
    """Tasks with start/end pushed to satisfy dependencies and engine order (read from the planned starts).
    Returns None when the dependencies contradict the engine order (a cycle). Tasks that keep their times
    are returned as they are: the planner re-times after every repair round, so this stays cheap."""
    sync = math.ceil(sync_ns)
    by_id = {t.id: t for t in tasks}
    chain_prev: dict[int, int] = {}
    for lane in engine_order(tasks).values():
        for before, after in zip(lane, lane[1:]):
            chain_prev[after] = before
    users: dict[int, list[int]] = {t.id: [] for t in tasks}
    waiting: dict[int, int] = {}
    for t in tasks:
        preds = set(t.deps)
        prev = chain_prev.get(t.id)
        if prev is not None:
            preds.add(prev)
        waiting[t.id] = len(preds)
        for p in preds:
            users[p].append(t.id)
    ready = deque(sorted(tid for tid, n in waiting.items() if n == 0))
    done: dict[int, Task] = {}
    while ready:
        tid = ready.popleft()
        t = by_id[tid]
        start = t.start_ns
        prev = chain_prev.get(tid)
        if prev is not None:
            start = max(start, done[prev].end_ns)
        engine = t.engine
        for d in t.deps:
            dep = done[d]
            start = max(start, dep.end_ns + (sync if dep.engine != engine else 0))
        done[tid] = t if start == t.start_ns else replace(t, start_ns=start, end_ns=start + t.duration_ns)
        for u in users[tid]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(done) != len(tasks):
        return None
    return tuple(done[t.id] for t in tasks)
