"""Spilling: free a scratchpad at its fullest instant by evicting a buffer to DRAM and reloading it later.

A candidate is a buffer live at the instant ``t`` but idle then (no task using it runs at ``t``) that shares
its storage with nobody, and is in no group holding a region (hetc.memory.aliasing): such a group is never
split, so nothing of it is spilled (the planner passes its buffers as ``shared``). Its uses split into those
before ``t`` and those after; candidates go by the bytes x time they free (Belady's furthest-next-use,
weighted by size) until the excess is covered. A spill goes to ``Target.spill_memory``: the on-chip L2 where
the target joins values there, else DRAM. It adds, on a DMA engine between the scratchpad and that memory:

* an **evict** transfer right after the buffer is produced (skipped when that memory already holds the value
  before ``t``: constants and graph inputs in DRAM, values made there or copied there anyway: a re-fetch);
* a **reload** transfer, released once the buffer fits in the memory again and just in time for the next use,
  into a new buffer ``<id>#k`` that every later reader is rebound to.

The evicted copy is a buffer of the memory it went to like any other: when it overfills the L2, the planner
repairs the L2 in turn (spilling to DRAM).

A copy that nobody has read by ``t`` is *postponed* instead: its own transfer moves down
its DMA queue, which frees the same bytes without a second transfer; a copy from DRAM on a target with an L2
is *staged* (``_staged``): read into the L2 and copied on late, which leaves the core's DRAM queue alone.
The schedule is then re-timed keeping each engine's order (``retime``).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from operator import attrgetter

from hetc.memory.artifact import Spill
from hetc.memory.lifetimes import BufferSpec, BufferTable, buffer_id
from hetc.memory.packing import live_profile
from hetc.memory.retime import retime
from hetc.schedule.artifact import Schedule, Task
from hetc.target.target import Target

# One storage of the memory: its members, live from start to end, its size padded to the alignment.
Occupancy = list[tuple[frozenset[str], int, int, int]]

MAX_READER_DELAYS = 1     # postponements of one transfer that may delay its reader (more: see _postpone)
# Postponements of one transfer in all. Where packing, not the live bytes, overflows, a copy postponed to where
# its bytes fit by the live count can overflow the packing again a few hundred ns later, round after round
# (ResNet-50 on `multi-npu`, its first tiling: one copy dragged 616 ns a round for 175 rounds, 20 s of
# compile time, for nothing); past this many, the bytes must come from another repair. Some plans do need a
# copy postponed a dozen times or more (Inception v2 on `multi-npu` without double buffering: 12 at most
# leaves it unplaceable, and the plan that ships instead is 0.7% slower).
MAX_POSTPONEMENTS = 24


@dataclass
class Postponements:
    """How often each transfer was postponed while planning one schedule, and how often that delayed its
    reader (``MAX_POSTPONEMENTS``, ``MAX_READER_DELAYS``)."""
    times: dict[int, int] = field(default_factory=dict)
    delayed_reader: dict[int, int] = field(default_factory=dict)
    staged: list[int] = field(default_factory=list)    # transfers postponed through the L2 (``_staged``)


class _Edits:
    """The schedule's tasks being edited by one ``spill_at`` (appended to, replaced in place), indexed by id."""

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = tasks
        self.position = {x.id: k for k, x in enumerate(tasks)}

    def __getitem__(self, task_id: int) -> Task:
        return self.tasks[self.position[task_id]]

    def waiters(self, task_id: int) -> list[Task]:
        """The tasks that wait for ``task_id`` (a scan: an index costs more than the few calls per edit)."""
        return [x for x in self.tasks if task_id in x.deps]

    def put(self, task: Task) -> None:
        """Replace the task of that id, or append a new one."""
        k = self.position.setdefault(task.id, len(self.tasks))
        if k == len(self.tasks):
            self.tasks.append(task)
        else:
            self.tasks[k] = task

    def next_id(self) -> int:
        return max(self.position) + 1


@dataclass(frozen=True)
class _Candidate:
    buffer: str
    before: tuple[int, ...]     # task ids using the buffer before t (writer first)
    after: tuple[int, ...]      # readers after t
    next_use: int               # start of the first reader after t
    arriving: bool = False      # its transfer is still running at t: it can only be postponed


def spill_candidates(table: BufferTable, schedule: Schedule, memory: str, t: int,
                     lifetimes: dict[str, tuple[int, int]], shared: set[str]) -> list[_Candidate]:
    """Buffers of ``memory`` live but idle at ``t``, best first. A copy whose transfer is still running at
    ``t`` and that nobody has read is a candidate too: it can be postponed (``before`` is then just that
    transfer, unfinished)."""
    tasks = schedule.by_id()
    found = []
    for bid, spec in table.buffers.items():
        if spec.memory != memory or bid in shared or spec.writer is None:
            continue
        start, end = lifetimes[bid]
        if not start <= t < end:
            continue
        writer = tasks[spec.writer]
        if writer.start_ns > t:
            continue                                   # re-timed past t since the lifetimes were taken
        arriving = writer.kind == "transfer" and writer.start_ns <= t < writer.end_ns
        if any(tasks[u].start_ns <= t < tasks[u].end_ns for u in spec.readers) or \
                (writer.start_ns <= t < writer.end_ns and not arriving):
            continue                                   # in use right now: cannot leave
        before = tuple(u for u in [spec.writer, *spec.readers] if tasks[u].end_ns <= t or u == spec.writer)
        after = tuple(sorted((u for u in spec.readers if tasks[u].start_ns > t),
                             key=lambda u: (tasks[u].start_ns, u)))
        if after and (not arriving or before == (spec.writer,)):
            found.append(_Candidate(bid, before, after, tasks[after[0]].start_ns, arriving))
    # Belady weighted by size: the most bytes x time freed first
    return sorted(found, key=lambda c: (-(c.next_use - t) * table.buffers[c.buffer].size, c.buffer))


def spill_at(table: BufferTable, schedule: Schedule, target: Target, memory: str, t: int, excess: int,
             lifetimes: dict[str, tuple[int, int]], shared: set[str],
             occupancy: Occupancy, history: Postponements | None = None
             ) -> tuple[Schedule, list[Spill], list[int]] | None:
    """Free ``excess`` bytes at ``t`` (or as many as can leave); mutates ``table`` and returns the re-timed
    schedule, the spills and the postponed transfers, or None when nothing can leave (everything live is in
    use, or no DMA engine links ``memory`` to where it would spill). ``occupancy`` is every storage of
    ``memory``: each reload waits until its bytes fit again.

    A copy brought from DRAM that nobody has read yet is not spilled but *postponed*: its transfer moves
    later in its DMA engine's queue, which frees the same bytes without a second transfer."""
    history = Postponements() if history is None else history
    capacity = target.memories[memory].size
    edits = _Edits(list(schedule.tasks))
    spills: list[Spill] = []
    postponed: list[int] = []
    freed = 0
    crowded = _crowded_instants(occupancy, capacity, t)
    size_of = {b: size for members, _, _, size in occupancy for b in members}
    for cand in spill_candidates(table, schedule, memory, t, lifetimes, shared):
        if freed >= excess:
            break
        size = size_of.get(cand.buffer)
        if size is None:
            continue                    # reloaded earlier in this round: the occupancy predates it
        fits_from = _fits_from(crowded, t, cand.next_use)
        if fits_from > cand.next_use:
            continue                    # it would have to come back while the memory is still too full
        if _postpone(table, edits, target, cand, fits_from, history):
            postponed.append(table.buffers[cand.buffer].writer)
            freed += size
            continue
        away = target.spill_memory(memory, size)
        engines = target.engines_between(memory, away)   # none: postponing is all that can be done
        if cand.arriving or not engines:
            continue
        spill = _apply(table, edits, target, memory, away, t, cand, engines[0].name, fits_from)
        if spill is not None:
            spills.append(spill)
            freed += size
    if not spills and not postponed:
        return None
    timed = retime(edits.tasks, target.sync_ns, schedule)
    if timed is None:   # cannot happen: every new edge goes forward in planned time
        raise RuntimeError(f"internal error: spilling in '{memory}' at t={t} made the schedule cyclic")
    return schedule.with_tasks(timed), spills, postponed


def _postpone(table: BufferTable, edits: _Edits, target: Target, cand: _Candidate, fits_from: int,
              history: Postponements) -> bool:
    """Move the transfer that wrote an unread copy to just before its first reader (but not before the
    bytes fit). Every task it passes in its queue ends before that reader starts, so no dependency can point
    backwards. The source copy lives longer; the planner checks its memory like any other."""
    spec = table.buffers[cand.buffer]
    writer = edits[spec.writer]
    if writer.kind != "transfer" or cand.before != (writer.id,) or \
            history.times.get(writer.id, 0) >= MAX_POSTPONEMENTS:
        return False
    # Every task that waits for the transfer bounds it, not only this buffer's readers: a reader rebound to a
    # reload by an earlier spill still waits for it.
    first_wait = min([cand.next_use] + [x.start_ns for x in edits.waiters(writer.id)])
    latest = first_wait - writer.duration_ns - math.ceil(target.sync_ns)
    release = max(fits_from, latest)
    if release <= writer.start_ns:
        return False                    # it is as late as it can be already
    if release > latest:
        # This delays the reader. A few times is fine (the memory frees meanwhile); more means the crowded
        # stretch moves with the reader and the same overflow comes back a little later, round after round.
        if history.delayed_reader.get(writer.id, 0) >= MAX_READER_DELAYS or _passes_a_waiter(
                edits, writer.engine, writer.start_ns, release, first_wait):
            return False
        history.delayed_reader[writer.id] = history.delayed_reader.get(writer.id, 0) + 1
    history.times[writer.id] = history.times.get(writer.id, 0) + 1
    if release <= latest and _staged(table, edits, target, spec, writer, fits_from, first_wait):
        history.staged.append(writer.id)
        return True
    edits.put(replace(writer, start_ns=release, end_ns=release + writer.duration_ns))
    return True


def _staged(table: BufferTable, edits: _Edits, target: Target, spec: BufferSpec, writer: Task, fits_from: int,
            first_wait: int) -> bool:
    """Postpone a copy from DRAM through the memory a spill would go to (the L2), if the target has one: the
    DRAM read into the L2, then the copy on into the scratchpad on the core's 4x faster L2 port, each as late
    as still meets the first reader and in a gap of its engine. A plain postponement moves the DRAM read down
    the core's DRAM queue, where it delays the copies behind it. False (nothing changed) where there is no
    such memory, the copy is predicated, the value is there already, no such gaps are found, or the L2 would
    hold more than half its capacity meanwhile."""
    away = target.spill_memory(spec.memory, spec.size)
    if away == target.dram or writer.src != target.dram or writer.when is not None:
        return False
    staged_id = buffer_id(spec.value, away)
    into, on = target.engines_between(target.dram, away), target.engines_between(away, spec.memory)
    if staged_id in table.buffers or not into or not on:
        return False
    sync = math.ceil(target.sync_ns)
    read_ns = max(1, math.ceil(target.transfer_ns(spec.size, into[0].name)))
    copy_ns = max(1, math.ceil(target.transfer_ns(spec.size, on[0].name)))
    copy_at = _latest_idle(edits, on[0].name, fits_from, first_wait - sync, copy_ns)
    read_at = None if copy_at is None else \
        _latest_idle(edits, into[0].name, writer.start_ns, copy_at - sync, read_ns)
    if read_at is None or _live_most(table, edits, away, read_at, copy_at + copy_ns) + spec.size > \
            target.memories[away].size // 2:
        return False
    read = Task(edits.next_id(), "transfer", into[0].name, read_at, read_at + read_ns,
                deps=writer.deps, value=spec.value, src=target.dram, dst=away, bytes=spec.size)
    edits.put(read)
    edits.put(replace(writer, engine=on[0].name, src=away, deps=tuple(sorted({*writer.deps, read.id})),
                      start_ns=copy_at, end_ns=copy_at + copy_ns))
    source, *gate = table.reads[writer.id]   # (a predicated copy still reads its gate where it writes)
    if source is not None:
        readers = table.buffers[source].readers
        readers[readers.index(writer.id)] = read.id
    table.reads[read.id] = [source]
    table.writes[read.id] = [staged_id]
    table.buffers[staged_id] = BufferSpec(staged_id, spec.value, away, spec.size, spec.dtype, spec.shape, "copy",
                                          read.id, readers=[writer.id])
    table.reads[writer.id] = [staged_id, *gate]
    return True


def _live_most(table: BufferTable, edits: _Edits, memory: str, start: int, end: int) -> int:
    """The most bytes of ``memory``'s buffers live at once in ``[start, end)`` as ``edits`` time them (buffers
    sharing bytes counted apart: an over-estimate)."""
    tasks = {x.id: x for x in edits.tasks}
    makespan = max(x.end_ns for x in edits.tasks)
    intervals = []
    for bid, b in table.buffers.items():
        if b.memory == memory:
            born, gone = table.lifetime(bid, tasks, makespan)
            if born < end and gone > start:
                intervals.append((max(born, start), gone, b.size))
    return live_profile(intervals)[0]


def _latest_idle(edits: _Edits, engine: str, since: int, until: int, duration: int) -> int | None:
    """The latest start in ``[since, until - duration]`` at which ``engine`` is idle for ``duration`` ns as
    planned, or None."""
    cursor = until
    for x in sorted((x for x in edits.tasks if x.engine == engine and x.start_ns < until and x.end_ns > since),
                    key=attrgetter("start_ns"), reverse=True):
        if x.end_ns <= cursor - duration:
            break
        cursor = min(cursor, x.start_ns)
    return cursor - duration if cursor - duration >= since else None


def _passes_a_waiter(edits: _Edits, engine: str, since: int, release: int, first_wait: int) -> bool:
    """Whether a transfer that enters ``engine``'s queue at ``release`` instead of ``since``, past its first
    reader's start ``first_wait``, lands behind a task that waits for something starting from then on: that
    may wait, through the reader's engine, for the reader, which waits for the transfer (a cycle)."""
    between = (x for x in edits.tasks if x.engine == engine and since < x.start_ns < release)
    return any(edits[d].start_ns >= first_wait for x in between for d in x.deps)


def _crowded_instants(occupancy: Occupancy, capacity: int, t: int) -> tuple[list[int], list[bool]]:
    """The boundaries from ``t`` on at which the live set changes, and whether it exceeds ``capacity``
    from each of them to the next."""
    deltas: dict[int, int] = {t: 0}
    live = 0
    for _, s, e, size in occupancy:
        if e <= t:
            continue
        if s <= t:
            live += size
        else:
            deltas[s] = deltas.get(s, 0) + size
        deltas[e] = deltas.get(e, 0) - size
    instants, crowded = [], []
    for instant in sorted(deltas):
        live += deltas[instant] if instant != t else 0
        instants.append(instant)
        crowded.append(live > capacity)
    return instants, crowded


def _fits_from(crowded: tuple[list[int], list[bool]], t: int, until: int) -> int:
    """The earliest instant after ``t`` from which a candidate fits back until its next use ``until``.
    The candidate itself is live over all of ``[t, until)``, so it fits back exactly where the memory as it
    is now is not over capacity."""
    instants, over = crowded
    k = bisect.bisect_left(instants, until) - 1       # the last boundary before ``until``
    while k >= 0 and not over[k]:
        k -= 1
    if k < 0:
        return t + 1
    return instants[k + 1] if k + 1 < len(instants) and instants[k + 1] < until else until


def _apply(table: BufferTable, edits: _Edits, target: Target, memory: str, away: str, t: int,
           cand: _Candidate, engine: str, fits_from: int) -> Spill | None:
    """Add the evict/reload transfers between ``memory`` and ``away`` to ``edits`` (not yet re-timed) and
    rebind the buffers."""
    spec = table.buffers[cand.buffer]
    sync = math.ceil(target.sync_ns)
    duration = max(1, math.ceil(target.transfer_ns(spec.size, engine)))
    next_id = edits.next_id()
    away_id = buffer_id(spec.value, away)
    away_copy = table.buffers.get(away_id)
    evict: Task | None = None
    release = fits_from
    if away_copy is not None:
        source_deps: tuple[int, ...] = table.makers(away_id)   # (a region there: what makes its base)
        if any(edits[d].end_ns > t for d in source_deps):
            return None                                # ``away`` gets the value only later: not worth a 2nd copy
    else:
        produced = edits[spec.writer]
        evict_at = produced.end_ns + sync
        evict = Task(next_id, "transfer", engine, evict_at, evict_at + duration, deps=(spec.writer,),
                     value=spec.value, src=memory, dst=away, bytes=spec.size)
        release = max(release, evict.end_ns)
    # Released once the bytes fit again, and as late as still meets the next use.
    in_time = cand.next_use - duration - sync
    release = max(release, in_time)
    if release > in_time and _passes_a_waiter(edits, engine, in_time, release, cand.next_use):
        return None                                   # a reload that late would close a cycle
    if evict is not None:
        edits.put(evict)
        next_id += 1
        source_deps = (evict.id,)
    reload = Task(next_id, "transfer", engine, release, release + duration, deps=source_deps,
                  value=spec.value, src=away, dst=memory, bytes=spec.size)
    edits.put(reload)
    rebound = set(cand.after)
    for reader in cand.after:
        x = edits[reader]
        edits.put(replace(x, deps=tuple(sorted({*x.deps, reload.id}))))

    k = 1
    while f"{cand.buffer}#{k}" in table.buffers:   # (counting every id that starts so cost O(buffers) a spill)
        k += 1
    reloaded_id = f"{cand.buffer}#{k}"
    if evict is not None:
        table.buffers[away_id] = BufferSpec(away_id, spec.value, away, spec.size, spec.dtype, spec.shape,
                                            "copy", evict.id)
        table.writes[evict.id] = [away_id]
        table.reads[evict.id] = [cand.buffer]
        spec.readers.append(evict.id)
    table.add_reader(away_id, reload.id)
    table.reads[reload.id] = [away_id]
    table.writes[reload.id] = [reloaded_id]
    table.buffers[reloaded_id] = BufferSpec(reloaded_id, spec.value, memory, spec.size, spec.dtype, spec.shape,
                                            "copy", reload.id, readers=list(cand.after))
    spec.readers = [r for r in spec.readers if r not in rebound]
    for reader in cand.after:
        table.reads[reader] = [reloaded_id if b == cand.buffer else b for b in table.reads[reader]]
    return Spill(value=spec.value, memory=memory, to=away, bytes=spec.size,
                 evict_task=evict.id if evict is not None else None, reload_task=reload.id)
