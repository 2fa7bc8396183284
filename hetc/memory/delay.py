"""Delaying a task until bytes it competes with are freed: the repair between spilling and moving a node.

When everything live in a scratchpad at its fullest instant ``t`` is in use, spilling cannot help, but often
one of the tasks running then is the last user of a buffer (an activation being copied out to DRAM or to
another core, a layer's input) and ends soon. A task running at ``t`` that wrote a buffer there can wait for
it: the repair adds the dependency ``freeing task -> writer`` and re-times, so the new buffer starts once
the old one is gone. This costs a little time and no traffic, where moving a node reschedules the graph.

No cycle can arise: both tasks run at ``t``, so neither can already (transitively) wait for the other.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from hetc.memory.lifetimes import BufferTable
from hetc.memory.retime import retime
from hetc.schedule.artifact import Schedule
from hetc.target.target import Target


@dataclass(frozen=True)
class Delay:
    task: int           # the task that now waits
    after: int          # the task it waits for (the last user of the bytes it needed)
    freed_bytes: int


def delay_at(table: BufferTable, schedule: Schedule, target: Target, memory: str, t: int,
             lifetimes: dict[str, tuple[int, int]], aliases: dict[str, str]) -> tuple[Schedule, Delay] | None:
    """Make the task running at ``t`` that writes into ``memory`` wait for the running task whose end frees
    the most bytes there; the re-timed schedule and the record, or None when no pair helps."""
    running = [x for x in schedule.tasks if x.start_ns <= t < x.end_ns]
    # Bytes each running task frees in ``memory`` when it ends: storages whose whole lifetime ends with it.
    ends: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for bid, spec in table.buffers.items():
        if spec.memory != memory:
            continue
        owner = aliases.get(bid, bid)
        ends[owner] = max(ends.get(owner, 0), lifetimes[bid][1])
        sizes[owner] = max(sizes.get(owner, 0), spec.size)
    touches: dict[int, set[str]] = {}
    for bid, spec in table.buffers.items():
        if spec.memory == memory and not spec.to_end:
            for reader in spec.readers:
                touches.setdefault(reader, set()).add(aliases.get(bid, bid))
    freeing = []
    for x in running:
        freed = sum(sizes[o] for o in touches.get(x.id, ()) if ends[o] == x.end_ns)
        if freed:
            freeing.append((freed, x))
    if not freeing:
        return None
    writers = [x for x in running if any(b in table.buffers and table.buffers[b].memory == memory
                                          for b in table.writes.get(x.id, ()))]
    # The latest starter waits: it has done the least work, and its output is what crowds the instant.
    writers.sort(key=lambda x: (-x.start_ns, x.id))
    for writer in writers:
        options = [(freed, x) for freed, x in freeing if x.id != writer.id and x.id not in writer.deps]
        if not options:
            continue
        freed, first = max(options, key=lambda o: (o[0], -o[1].end_ns, -o[1].id))
        updated = [replace(x, deps=tuple(sorted({*x.deps, first.id}))) if x.id == writer.id else x
                   for x in schedule.tasks]
        timed = retime(updated, target.sync_ns, schedule)
        if timed is None:       # cannot happen: both run at t, so neither waits for the other yet
            raise RuntimeError(f"internal error: delaying task {writer.id} after {first.id} made a cycle")
        return schedule.with_tasks(timed), Delay(writer.id, first.id, freed)
    return None
