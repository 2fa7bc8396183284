"""Address-reuse dependencies: when a buffer takes over bytes another buffer used earlier, its writer must
wait for the earlier buffer's last users: of each other engine, the last in its program order. The plan's
times already respect this; the edges let codegen make it hold on any timing (the simulator's can differ
from the plan's), with one semaphore per other engine."""
from __future__ import annotations

import numpy as np

from hetc.memory.artifact import MemoryPlan


def reuse_dependencies(plan: MemoryPlan) -> dict[int, tuple[int, ...]]:
    """``{writer task: tasks on other engines that must end first}`` for every reused address range."""
    tasks = {t.id: t for t in plan.schedule.tasks}
    users: dict[str, list[int]] = {}
    writers: dict[str, set[int]] = {}
    for tid, tb in plan.task_buffers.items():
        for bid in tb.reads:
            if bid is not None:
                users.setdefault(bid, []).append(tid)
        for bid in tb.writes:
            users.setdefault(bid, []).append(tid)
            writers.setdefault(bid, set()).add(tid)
    # storage = alias group: address range, lifetime, every task touching it, the tasks writing its first bytes
    # (the owner's writer; for an Assemble output, whose owner no task writes, each part's writer)
    groups: dict[tuple[str, str], dict] = {}
    for b in plan.buffers:
        if b.size == 0 or b.kind == "constant":
            continue
        owner = b.owner
        g = groups.setdefault((b.memory, owner), {"lo": b.offset, "hi": b.end, "start": b.start_ns,
                                                   "end": b.end_ns, "users": set(), "writers": set()})
        g["lo"], g["hi"] = min(g["lo"], b.offset), max(g["hi"], b.end)
        g["start"], g["end"] = min(g["start"], b.start_ns), max(g["end"], b.end_ns)
        g["users"].update(users.get(b.id, ()))
        g["writers"].update(writers.get(b.id, ()))
        if b.id == owner:
            g["owner"] = b.id
    deps: dict[int, set[int]] = {}
    order = {t.id: i for lane in plan.schedule.engine_tasks().values() for i, t in enumerate(lane)}
    by_memory: dict[str, list[dict]] = {}
    for (memory, _), g in groups.items():
        by_memory.setdefault(memory, []).append(g)
    for storages in by_memory.values():
        lo, hi, end = (np.array([g[k] for g in storages], dtype=np.int64) for k in ("lo", "hi", "end"))
        lasts = [_last_users(g["users"], tasks, order) for g in storages]
        for i, b in enumerate(storages):
            firsts = writers.get(b.get("owner", ""), ()) or b["writers"]
            if not firsts:
                continue
            # the storages used before b's start in bytes b takes over (vectorised: thousands in an L2)
            earlier = np.flatnonzero((lo < b["hi"]) & (hi > b["lo"]) & (end <= b["start"]))
            earlier_users = [(e, u) for a in earlier if a != i for e, u in lasts[a].items()]
            for first in firsts:
                engine = tasks[first].engine
                deps.setdefault(first, set()).update(u for e, u in earlier_users if e != engine)
    # An engine runs its tasks in program order: of each engine's users only the last is waited for, and none
    # where the writer already depends on that task or a later one of that engine, unless the writer is
    # predicated: skipped, it drops dependencies a reuse would still need (codegen.sync.skippable_deps).
    out: dict[int, tuple[int, ...]] = {}
    for first, waited in sorted(deps.items()):
        last = _last_users(waited, tasks, order)
        for d in tasks[first].deps if tasks[first].when is None else ():
            e = tasks[d].engine
            if e in last and order[d] >= order[last[e]]:
                del last[e]
        if last:
            out[first] = tuple(sorted(last.values()))
    return out


def taken_over(plan: MemoryPlan, pairs: list[tuple[int, int]]) -> set[str]:
    """The storages (their owners) whose bytes the first task of a pair in ``pairs`` (writer, user) writes over
    after the second used them: for each address-reuse dependency named."""
    if not pairs:
        return set()
    buffers = {b.id: b for b in plan.buffers}
    owners: set[str] = set()
    for writer, user in pairs:
        written = [buffers[bid] for bid in plan.task_buffers[writer].writes]
        for bid in (*plan.task_buffers[user].reads, *plan.task_buffers[user].writes):
            b = buffers.get(bid) if bid is not None else None
            if b is not None and any(w.memory == b.memory and w.offset < b.end and b.offset < w.end
                                     for w in written):
                owners.add(b.owner)
    return owners


def _last_users(users: set[int], tasks: dict, order: dict[int, int]) -> dict[str, int]:
    """Per engine, the user last in that engine's program ``order``."""
    last: dict[str, int] = {}
    for u in users:
        e = tasks[u].engine
        if e not in last or order[u] > order[last[e]]:
            last[e] = u
    return last
