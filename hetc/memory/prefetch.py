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

Measured on the light models (docs/benchmarks.md, "double buffering before the repairs"): ZFNet-512 on
``multi-npu`` goes from 388 spills and 32.6 ms planned to 2 spills and 22.0 ms, because repairs that spill one
buffer at a time leave worse schedules than a bounded lead does up front.
"""
from __future__ import annotations

from dataclasses import replace
from operator import attrgetter

from hetc.memory.retime import engine_order, retime
from hetc.schedule.artifact import Schedule, Task
from hetc.target.target import Target


def limit_prefetch(schedule: Schedule, target: Target,
                   crowded: dict[str, list[tuple[int, int]]]) -> tuple[Schedule, int]:
    """``schedule`` with every copy into a device memory that waits for its first reader through one of that
    memory's ``crowded`` stretches ([start, end) in ns) released at the start of the compute before that
    reader on its device (module docstring), re-timed; and how many copies that moved."""
    homes = {d.memory for d in target.devices.values()} - {target.dram}
    by_id = {t.id: t for t in schedule.tasks}
    previous_start: dict[int, int] = {}    # compute task -> start of the compute before it on its device
    for engine, ids in engine_order(list(schedule.tasks)).items():
        if engine in target.devices:
            for before, after in zip(ids, ids[1:]):
                previous_start[after] = by_id[before].start_ns
    waiters: dict[int, list[Task]] = {}
    for t in schedule.tasks:
        for d in t.deps:
            waiters.setdefault(d, []).append(t)
    tasks, moved = [], 0
    for t in schedule.tasks:
        ws = waiters.get(t.id, [])
        if t.kind == "transfer" and t.dst in homes and ws and all(w.kind == "compute" for w in ws):
            reader = min(ws, key=attrgetter("start_ns", "id"))
            if any(s < reader.start_ns and t.start_ns < e for s, e in crowded.get(t.dst, ())):
                release = previous_start.get(reader.id, 0)
                if release > t.start_ns:
                    t = replace(t, start_ns=release, end_ns=release + t.duration_ns)
                    moved += 1
        tasks.append(t)
    if not moved:
        return schedule, 0
    timed = retime(tasks, target.sync_ns, schedule)
    if timed is None:   # cannot happen: only copies move, later, and their waiters wait for them
        raise RuntimeError("internal error: releasing prefetches made the schedule cyclic")
    return schedule.with_tasks(timed), moved
