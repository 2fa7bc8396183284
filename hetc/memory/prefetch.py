"""Double buffering: a copy into a device's memory starts no earlier than the compute before its first reader.

The scheduler times every task as early as its engine order and dependencies allow; it bounds a copy's lead
by the scratchpad (``hetc.schedule.tasks.lead_deps``) but counts only the copies, not the outputs and the copies
read again later, and a CP-SAT order may keep a copy early. A DMA queue faster than its device can then still
run ahead of it, loading operands of tiles many steps away, and each of them occupies the scratchpad until its
reader ends. NPU compilers bound
that lead by double buffering: tile k+1's operands load while tile k computes, no earlier. This is that bound,
applied once before any repair where the schedule overfills a device memory (not DRAM, not a staging memory
that no device computes in): every copy into it whose waiters all compute and that waits for its first reader
through a stretch of time where the memory's live bytes exceed its capacity is released at the start of the
compute task that precedes that reader on its device, and the schedule is re-timed (``retime``: nothing moves
earlier, a postponed copy moves down its DMA queue, a reader it now ends after waits for it). Elsewhere the
scheduler's lead stays: loading further ahead is free where it fits. The price: SqueezeNet on ``edge-soc`` is
2% slower, its one crowded instant having been repaired by a single postponement that delayed nobody.

Limiting every such copy can cost more than the crowding needs (AlexNet on ``edge-soc``: 35 copies, 2.1%, where
3 suffice for 0.5%), so a second rule limits only enough of them (``only_excess``): at each stretch's fullest
instant, the copies live then that their release takes out of it, furthest ahead of their reader first, until
their bytes cover the excess. A third keeps every such copy within a few computes of its reader instead of
one (``lead``). The planner tries them where the first rule costs much (``hetc.memory.planner.plan_memory``).

Measured on the light models (docs/benchmarks.md, "double buffering before the repairs"): ZFNet-512 on
``multi-npu`` goes from 388 spills and 32.6 ms planned to 2 spills and 22.0 ms, because repairs that spill one
buffer at a time leave worse schedules than a bounded lead does up front.
"""
from __future__ import annotations

from dataclasses import replace
from operator import attrgetter
from typing import NamedTuple

from hetc.memory.retime import engine_order, retime
from hetc.schedule.artifact import Schedule, Task
from hetc.target.target import Target


class Stretch(NamedTuple):
    """A stretch [start, end) of time where a memory's live bytes exceed its capacity."""
    start: int
    end: int
    fullest_at: int
    excess: int            # bytes live at the fullest instant above the capacity


def limit_prefetch(schedule: Schedule, target: Target, crowded: dict[str, list[Stretch]],
                   only_excess: bool = False, lead: int = 1) -> tuple[Schedule, set[int]]:
    """``schedule`` with copies into device memories released at the start of the compute ``lead`` computes
    before their first reader on its device (1: the one before it, module docstring), re-timed, and the ids
    of the copies that moved. A candidate is a copy whose waiters all compute and that waits for its first
    reader through one of its memory's ``crowded`` stretches. Every candidate moves, or with ``only_excess``
    only those live at a stretch's fullest instant that the release takes out of it, furthest ahead of their
    reader first, until they cover its excess."""
    homes = {d.memory for d in target.devices.values()} - {target.dram}
    by_id = {t.id: t for t in schedule.tasks}
    previous_start: dict[int, int] = {}    # compute task -> start of the compute ``lead`` before it on its device
    for engine, ids in engine_order(list(schedule.tasks)).items():
        if engine in target.devices:
            for before, after in zip(ids, ids[lead:]):
                previous_start[after] = by_id[before].start_ns
    waiters: dict[int, list[Task]] = {}
    for t in schedule.tasks:
        for d in t.deps:
            waiters.setdefault(d, []).append(t)
    candidates: list[tuple[Task, int, int]] = []     # (copy, its first reader's start, its release)
    for t in schedule.tasks:
        ws = waiters.get(t.id, [])
        if t.kind == "transfer" and t.dst in homes and ws and all(w.kind == "compute" for w in ws):
            reader = min(ws, key=attrgetter("start_ns", "id"))
            release = previous_start.get(reader.id, 0)
            if release > t.start_ns and any(s.start < reader.start_ns and t.start_ns < s.end
                                            for s in crowded.get(t.dst, ())):
                candidates.append((t, reader.start_ns, release))
    release_of = _enough_to_cover(candidates, crowded) if only_excess else \
        {t.id: release for t, _, release in candidates}
    if not release_of:
        return schedule, set()
    tasks = [replace(t, start_ns=release_of[t.id], end_ns=release_of[t.id] + t.duration_ns)
             if t.id in release_of else t for t in schedule.tasks]
    timed = retime(tasks, target.sync_ns, schedule)
    if timed is None:   # cannot happen: only copies move, later, and their waiters wait for them
        raise RuntimeError("internal error: releasing prefetches made the schedule cyclic")
    return schedule.with_tasks(timed), set(release_of)


def _enough_to_cover(candidates: list[tuple[Task, int, int]], crowded: dict[str, list[Stretch]]) -> dict[int, int]:
    """Per stretch, the candidates live at its fullest instant whose release comes after it, furthest ahead of
    their reader first, until their bytes cover its excess: copy id -> release."""
    chosen: dict[int, int] = {}
    for memory, stretches in crowded.items():
        for stretch in stretches:
            at = stretch.fullest_at
            live = sorted(((reader, t.id, release, t.bytes) for t, reader, release in candidates
                           if t.dst == memory and t.start_ns <= at < release), reverse=True)
            freed = sum(size for _, tid, _, size in live if tid in chosen)
            for _, tid, release, size in live:
                if freed >= stretch.excess:
                    break
                if tid not in chosen:
                    chosen[tid] = release
                    freed += size
    return chosen
