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
    Returns None when the dependencies contradict the engine order (a cycle)."""
    sync = math.ceil(sync_ns)
    by_id = {t.id: t for t in tasks}
    chain_prev: dict[int, int] = {}
    for lane in engine_order(tasks).values():
        for before, after in zip(lane, lane[1:]):
            chain_prev[after] = before
    preds = {t.id: set(t.deps) | ({chain_prev[t.id]} if t.id in chain_prev else set()) for t in tasks}
    users: dict[int, list[int]] = {t.id: [] for t in tasks}
    for tid, ps in preds.items():
        for p in ps:
            users[p].append(tid)
    waiting = {tid: len(ps) for tid, ps in preds.items()}
    ready = deque(sorted(tid for tid, n in waiting.items() if n == 0))
    done: dict[int, Task] = {}
    while ready:
        tid = ready.popleft()
        t = by_id[tid]
        start = t.start_ns
        if tid in chain_prev:
            start = max(start, done[chain_prev[tid]].end_ns)
        for d in t.deps:
            dep = done[d]
            start = max(start, dep.end_ns + (sync if dep.engine != t.engine else 0))
        done[tid] = replace(t, start_ns=start, end_ns=start + t.duration_ns)
        for u in users[tid]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(done) != len(tasks):
        return None
    return tuple(done[t.id] for t in tasks)
