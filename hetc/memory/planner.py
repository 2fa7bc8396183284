"""``plan_memory``: double buffering -> lifetimes -> aliasing -> capacity (spill / delay / move / fail) ->
packing -> MemoryPlan.

Each memory is packed on its own. DRAM starts with the read-only constants region (constants at fixed
offsets in first-use order), and every other buffer is packed above it. A scratchpad whose live set exceeds
its capacity, or whose best packing does, gets prefetches postponed or buffers spilled at the fullest instant
of every stretch of time where it is too full, all in one round, and the loop starts over on the re-timed
schedule. Where nothing can leave, a task running then waits for another whose end frees bytes
(``hetc.memory.delay``); where that cannot help either, the node running then is moved to another device and
the graph rescheduled (``hetc.memory.fallback``), and when that is impossible too the build fails with a
message that names the memory, the time, the bytes needed and available, and what is live.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable, Literal

from hetc.errors import MemoryPlanError
from hetc.ir import Graph
from hetc.memory.aliasing import placement, resolve_aliases, strides_or_none
from hetc.memory.artifact import Buffer, MemoryPlan, MemoryStats, Spill, TaskBuffers
from hetc.memory.delay import delay_at
from hetc.memory.fallback import move_node_off
from hetc.memory.layout import (Layout, Storage, crowded_stretches, group_storages, is_constant, live_overflow,
                                live_peak, live_peaks, pack_layout, packing_overflow, pad, polish, repacked)
from hetc.memory.lifetimes import BufferTable, build_table
from hetc.memory.prefetch import limit_prefetch
from hetc.memory.retime import retime_shared
from hetc.memory.reuse import reuse_dependencies, taken_over
from hetc.memory.spill import Postponements, spill_at
from hetc.schedule.artifact import Schedule
from hetc.schedule.dram import task_asks
from hetc.schedule.problem import build_problem
from hetc.target.target import Target

DEFAULT_TIME_LIMIT_S = 0.6
MAX_SPILL_ROUNDS = 200     # each round frees the excess at one instant
MAX_MOVES = 32
# Makespan after double buffering / before it, above which the plan without double buffering is tried too: a
# prefetch limited where the scratchpad is full as scheduled may cost more than the repairs would (Inception v1
# on `multi-npu`, before its split outputs joined in the L2: 1.015x, against 1.000x left to the repairs;
# docs/memory.md, "Capacity").
DOUBLE_BUFFER_RETRY = 1.01
WIDER_LEAD = 3             # computes ahead of its reader a prefetch may load in the "wider" plan
HOLD_ROUNDS = 3            # re-packings holding bytes for a writer on another engine (_held_for_reuse)
EXCESS_ROUNDS = 6          # re-timings of the "excess" double buffering: each sees where the last left crowding
# Prefetches double buffering limits: every one waiting through a crowded stretch (to the compute before its
# reader, or with "wider" to the one ``WIDER_LEAD`` before it), only enough of them to cover each stretch's
# excess, or none (the repairs alone).
Limit = Literal["every", "wider", "excess", "none"]


def plan_memory(graph: Graph, schedule: Schedule, target: Target, time_limit_s: float | None = None,
                allow_moves: bool = True, progress: Callable[[str], None] | None = None,
                double_buffer: bool = True) -> MemoryPlan:
    """``_plan_memory`` (below); where double buffering every crowded prefetch alone lengthened the schedule by
    more than ``DOUBLE_BUFFER_RETRY``, also the plans that limit only enough of them, every one to a wider
    lead, and none, and the fastest ships (the first of equals in that order)."""
    plan = _plan_memory(graph, schedule, target, time_limit_s, allow_moves, progress,
                        "every" if double_buffer else "none")
    cost = plan.details["double_buffered_ns"] / max(1, schedule.makespan_ns)
    if not double_buffer or cost <= DOUBLE_BUFFER_RETRY:
        return plan
    for limit in ("excess", "wider", "none"):
        if progress:
            progress(f"double buffering lengthened the schedule {cost:.3f}x; planning again, limiting {limit}")
        try:   # (without moving nodes: that repair reschedules, the costly one)
            other = _plan_memory(graph, schedule, target, time_limit_s, False, progress, limit)
        except MemoryPlanError:
            continue
        if other.schedule.makespan_ns < plan.schedule.makespan_ns:
            plan = other
    return plan


def _plan_memory(graph: Graph, schedule: Schedule, target: Target, time_limit_s: float | None,
                 allow_moves: bool, progress: Callable[[str], None] | None, limit: Limit) -> MemoryPlan:
    """Place every buffer of ``schedule`` in ``target``'s memories. The returned plan carries the schedule it
    is valid for, the one that ships: the input one, or a re-timed one with spill transfers, or a rescheduled
    one when a node had to move (``details['moved_nodes']``), whose statistics then describe it
    (``SolverStats.shipped``). ``progress`` hears of every repair round (a large model takes hundreds).
    ``limit`` says which prefetches double buffering limits (``Limit``; ``hetc.memory.prefetch``): with
    "none" the scheduler's prefetch times are left to the repairs alone."""
    began = time.perf_counter()
    solver_stats = schedule.stats
    budget = DEFAULT_TIME_LIMIT_S if time_limit_s is None else time_limit_s
    nodes = graph.node_map()
    table = build_table(graph, schedule, target)
    given = group_storages(table, table.lifetimes(schedule), resolve_aliases(table, schedule, nodes))
    scheduled_live = live_peaks(given, target)
    schedule, limited = _double_buffered(table, schedule, target, nodes, limit, given)
    double_buffered_ns = schedule.makespan_ns
    spills: list[Spill] = []
    moved: list[dict] = []
    rounds = 0
    margin: dict[str, int] = {}               # headroom each scratchpad's live bytes must leave for packing
    postponed: list[int] = []                 # transfers moved later in their DMA queue
    history = Postponements()                 # how often each transfer was postponed, and delayed its reader
    aliases: dict[str, str] | None = None
    delays: list[dict] = []                   # tasks made to wait for the end of another to free bytes
    unmargined: set[str] = set()              # memories repaired where their packing overflows, no headroom
    packings: dict = {}                       # pack_layout's memo: a repair often leaves a memory as it was
    while True:
        lifetimes = table.lifetimes(schedule)
        if aliases is None:
            # Postponing only re-times: the table and the dependencies, which decide aliasing, stay as
            # they were, so the groups are recomputed only after a spill or a move changed them.
            aliases = resolve_aliases(table, schedule, nodes)
        storages = group_storages(table, lifetimes, aliases)
        used = [m for m in target.memories if any(s.memory == m for s in storages)]
        share = budget / max(1, len(used))      # fixed budgets keep the plan reproducible
        crowded = live_overflow(storages, target, margin)
        overflow = (crowded[0], crowded[1][0]) if crowded else None
        layout = None
        if overflow is None:                    # scratchpads first: DRAM is packed once they all fit
            layout = pack_layout(table, storages, target, [m for m in used if m != target.dram], share, memo=packings)
            overflow = packing_overflow(layout, storages, target)
            if overflow is not None and overflow[0] != target.dram and overflow[0] not in unmargined:
                # Fragmentation: ask the cheap live-bytes check for the overshoot as headroom, so that
                # spilling frees it wherever needed before the next (costly) packing.
                memory = overflow[0]
                overshoot = layout.stats[memory].peak_bytes - target.memories[memory].size
                # Twice the overshoot, doubling after that: the fragmentation rarely shrinks with the live set,
                # so this takes two or three packings at most, for a few more bytes spilled than strictly needed.
                margin[memory] = max(2 * margin.get(memory, 0), 2 * overshoot, target.memories[memory].alignment)
                if live_overflow(storages, target, margin) is not None:
                    continue
        if overflow is None:
            dram = pack_layout(table, storages, target, [target.dram], share, memo=packings)
            layout.offsets.update(dram.offsets)
            layout.stats.update(dram.stats)
            layout.methods.update(dram.methods)
            overflow = packing_overflow(dram, storages, target)
            if overflow is None:
                break
        memory, t = overflow
        if memory == target.dram:
            raise _overflow_error(memory, t, table, storages, lifetimes, target, layout, spilled=False)
        align = target.memories[memory].alignment
        occupancy = [(frozenset(s.members), s.start, s.end, pad(s.size, align)) for s in storages
                     if s.memory == memory]
        packing_excess = layout.stats[memory].peak_bytes - target.memories[memory].size if layout else 0
        rounds += 1
        if progress:
            progress(f"repair round {rounds}: '{memory}' too full at {t / 1000:,.1f} µs; {len(spills)} spills, "
                     f"{len(set(postponed))} prefetches postponed so far")
        # Every crowded stretch of the memory is repaired in this one round, in time order, each seeing the
        # re-timing of the ones before (the occupancy stays the round's; the next round checks it all again).
        # A round per stretch redid the whole analysis hundreds of times on 2 MiB scratchpads.
        repaired = False
        regioned = _regioned(table, storages)
        for t in (crowded[1] if crowded else [t]):
            live = sum(size for _, s, e, size in occupancy if s <= t < e)
            excess = max(live - target.memories[memory].size + margin.get(memory, 0), packing_excess, align)
            shared = _sharing_at(storages, lifetimes, memory, t) | regioned
            staged = len(history.staged)
            result = spill_at(table, schedule, target, memory, t, excess, lifetimes, shared, occupancy,
                              history) \
                if rounds <= MAX_SPILL_ROUNDS else None
            if result is None:
                break
            schedule, more, later = result
            # The next stretch sees this repair's re-timing; until the next round, only this memory's
            # buffers are looked at (candidates and the storages they share).
            lifetimes = table.lifetimes(schedule, memory)
            repaired = True
            spills += more
            postponed += later
            if more or len(history.staged) > staged:
                aliases = None                  # spills and staging rebind readers: the next round regroups
        if repaired:
            continue
        waited = delay_at(table, schedule, target, memory, t, lifetimes, aliases) \
            if rounds <= MAX_SPILL_ROUNDS else None
        if waited is not None:
            schedule, delay = waited
            delays.append({"task": delay.task, "after": delay.after, "freed_bytes": delay.freed_bytes})
            aliases = None                      # a new dependency changes what is an ancestor of what
            continue
        if margin.get(memory) and live <= target.memories[memory].size:
            # Only the fragmentation headroom is missing here, and nothing can be done at this instant:
            # drop the headroom and repair where the packing itself sticks out instead.
            margin.pop(memory)
            unmargined.add(memory)
            continue
        banned = frozenset((m["node"], m["from"]) for m in moved)
        rescheduled = move_node_off(graph, schedule, target, memory, t, banned) \
            if allow_moves and len(moved) < MAX_MOVES else None
        if rescheduled is None:
            raise _overflow_error(memory, t, table, storages, lifetimes, target, layout, spilled=bool(spills))
        schedule, move = rescheduled
        table = build_table(graph, schedule, target)
        schedule, limited = _double_buffered(table, schedule, target, nodes, limit)
        moved.append(move)
        spills, rounds, margin, postponed = [], 0, {}, []
        history, aliases, delays, unmargined = Postponements(), None, [], set()
    polish(layout, table, storages, target, share)
    layout.stats = {m: replace(st, scheduled_live_bytes=scheduled_live.get(m)) for m, st in layout.stats.items()}
    details = {"moved_nodes": moved, "prefetch_limit": limit, "limited_prefetches": limited,
               "double_buffered_ns": double_buffered_ns,
               "postponed_transfers": sorted(set(postponed)),
               "staged_transfers": sorted(set(history.staged)), "delayed_tasks": delays, "spill_rounds": rounds}
    # One schedule leaves this stage: the statistics describe it, the solver's own figures kept apart.
    stats = solver_stats.shipped(schedule.makespan_ns)
    if moved:
        stats = replace(stats, details={**stats.details, "rescheduled_by": "memory planner"})
    schedule = replace(schedule, stats=stats)
    plan = _artifact(table, schedule, target, lifetimes, aliases, layout, spills, details,
                     time.perf_counter() - began)
    shipped = _timed_with_shared_dram(plan, graph, table, aliases, layout, target, began)
    return _held_for_reuse(shipped, plan, graph, table, lifetimes, aliases, layout, target, share, began)


def _held_for_reuse(shipped: MemoryPlan, plan: MemoryPlan, graph: Graph, table: BufferTable,
                    lifetimes: dict[str, tuple[int, int]], aliases: dict[str, str], layout: Layout,
                    target: Target, seconds: float, began: float) -> MemoryPlan:
    """``shipped``, or ``plan`` re-packed so that bytes another engine's writer takes over are held a semaphore
    past their last user (``sync_ns``), where it packs in no more bytes and, timed as the bundle runs, ends
    sooner.

    Packed at the users' own ends, a reuse the schedule leaves less than a semaphore makes the writer wait for
    it once the plan is timed as the bundle runs (the 16-token MoE on `edge-soc`: 299 ns). Holding every
    buffer's bytes that long cost more bytes than it saved time (docs/benchmarks.md, "A semaphore's slack in
    the packing"), so only the storages whose reuse made its writer wait are held, in rounds while they gain (a
    re-packing may make new such reuses), and a memory keeps its packing unless the new one is no larger."""
    if shipped.details["shared_dram_ns"] <= 0:
        return shipped   # looked for only where the timing as the bundle runs lost time
    details = {k: v for k, v in plan.details.items() if k not in ("seconds", "methods", "aliases", "spills")}
    sync = math.ceil(target.sync_ns)
    held: set[str] = set()
    timed = shipped
    planned = plan.schedule.by_id()   # (the re-packings keep the schedule; only the timing as run moves)
    for _ in range(HOLD_ROUNDS):
        ran = timed.schedule.by_id()
        waited = [(w, u) for w, users in plan.reuse_deps.items() for u in users
                  if planned[w].start_ns < planned[u].end_ns + sync and ran[w].start_ns == ran[u].end_ns + sync]
        waiting = taken_over(plan, waited) - held
        if not waiting:
            break
        held |= waiting
        storages = group_storages(table, lifetimes, aliases, dict.fromkeys(held, sync))
        layout = repacked(layout, table, storages, target, {s.memory for s in storages if s.owner in waiting},
                          seconds)
        plan = _artifact(table, plan.schedule, target, lifetimes, aliases, layout, list(plan.spills),
                         {**details, "held_for_reuse": len(held)}, time.perf_counter() - began)
        timed = _timed_with_shared_dram(plan, graph, table, aliases, layout, target, began)
        if timed.schedule.makespan_ns >= shipped.schedule.makespan_ns:
            break
        shipped = timed
    return shipped


def _timed_with_shared_dram(plan: MemoryPlan, graph: Graph, table: BufferTable, aliases: dict[str, str],
                            layout: Layout, target: Target, began: float) -> MemoryPlan:
    """``plan`` with its schedule timed once more with DRAM's bandwidth shared and each task as early as the
    bundle starts it (``retime_shared``): the repairs re-time with fixed durations, so a copy they moved
    beside another DRAM user was planned as fast as alone, and they hold tasks at planned starts no semaphore
    states. The address-reuse dependencies hold through it, so the offsets stay valid; the lifetimes and
    lower bounds follow the new times."""
    schedule = plan.schedule
    problem = build_problem(graph, target, durations_of=lambda node: {})   # (the asks need no costs)
    tasks = retime_shared(schedule.tasks, target.sync_ns, task_asks(problem, schedule.tasks), plan.reuse_deps)
    if tasks is None or all(a is b for a, b in zip(tasks, schedule.tasks)):
        return replace(plan, details={**plan.details, "shared_dram_ns": 0})
    makespan = max(t.end_ns for t in tasks)
    timed = replace(schedule, tasks=tasks, stats=schedule.stats.shipped(makespan))
    lifetimes = table.lifetimes(timed)
    storages = group_storages(table, lifetimes, aliases)
    stats = dict(layout.stats)
    for name, st in stats.items():
        align = target.memories[name].alignment
        base = layout.constants_bytes if name == target.dram else 0
        packed = [s for s in storages if s.memory == name and not (base and is_constant(table, s))]
        live, when, members = live_peak(packed, align)
        stats[name] = replace(st, lower_bound_bytes=base + live, peak_time_ns=when, peak_buffers=members)
    details = {**plan.details, "shared_dram_ns": makespan - schedule.makespan_ns}
    return _artifact(table, timed, target, lifetimes, aliases, replace(layout, stats=stats), list(plan.spills),
                     details, time.perf_counter() - began)


def _double_buffered(table: BufferTable, schedule: Schedule, target: Target, nodes: dict,
                     limit: Limit, storages: list[Storage] | None = None) -> tuple[Schedule, int]:
    """``limit_prefetch`` on the stretches of time where a device memory's live bytes exceed its capacity as
    scheduled: once for "every" (or "wider") prefetch waiting through one; for only the "excess", again on
    each re-timing (a stretch relieved at its fullest instant may still be crowded at another), up to
    ``EXCESS_ROUNDS``.
    ``storages``: those of ``schedule``, when the caller has them already."""
    if limit == "none":
        return schedule, 0
    limited: set[int] = set()
    for _ in range(EXCESS_ROUNDS if limit == "excess" else 1):
        if storages is None:
            storages = group_storages(table, table.lifetimes(schedule), resolve_aliases(table, schedule, nodes))
        crowded = {name: crowded_stretches(storages, name, memory, memory.size)
                   for name, memory in target.memories.items() if name != target.dram}
        schedule, moved = limit_prefetch(schedule, target, crowded, only_excess=limit == "excess",
                                         lead=WIDER_LEAD if limit == "wider" else 1)
        if not moved:
            break
        limited |= moved
        storages = None   # re-timed: taken again
    return schedule, len(limited)


def _regioned(table: BufferTable, storages: list[Storage]) -> set[str]:
    """Every buffer of a group holding a region member: repairs never split such a group (no member is
    spilled on its own, and the owner's later readers share bytes with the regions)."""
    return {m for s in storages if any(table.buffers[x].region_of is not None for x in s.members)
            for m in s.members}


def _sharing_at(storages: list[Storage], lifetimes: dict[str, tuple[int, int]], memory: str, t: int) -> set[str]:
    """Buffers of ``memory`` whose storage another live buffer also holds at ``t``: evicting one would free
    nothing. (Members that start later are rebound to the reloaded copy, and aliasing is decided afresh.)"""
    shared: set[str] = set()
    for s in storages:
        if s.memory != memory or len(s.members) < 2:
            continue
        live = [m for m in s.members if lifetimes[m][0] <= t < lifetimes[m][1]]
        if len(live) > 1:
            shared.update(live)
    return shared


def _overflow_error(memory: str, t: int, table: BufferTable, storages: list[Storage],
                    lifetimes: dict[str, tuple[int, int]], target: Target, layout: Layout | None,
                    spilled: bool) -> MemoryPlanError:
    align = target.memories[memory].alignment
    live = [s for s in storages if s.memory == memory and s.start <= t < s.end]
    need = sum(pad(s.size, align) for s in live)
    if layout is not None and memory in layout.stats:
        need = max(need, layout.stats[memory].peak_bytes)
    names = ", ".join(f"{m} ({table.buffers[m].size} B)" for s in sorted(live, key=lambda s: -s.size)[:8]
                      for m in s.members[:1])
    fix = ("give the target a larger memory" if memory == target.dram else
           "every live buffer is in use at that instant" + (" even after spilling" if spilled else "") +
           "; give the scratchpad more capacity or keep the node off this device")
    return MemoryPlanError(
        f"memory '{memory}' overflows at t={t} ns: {need} B required, {target.memories[memory].size} B "
        f"available; live then: {names}; {fix}", memory=memory)


def _artifact(table: BufferTable, schedule: Schedule, target: Target, lifetimes: dict[str, tuple[int, int]],
              aliases: dict[str, str], layout: Layout | None, spills: list[Spill], details: dict,
              seconds: float) -> MemoryPlan:
    assert layout is not None
    buffers = []
    memo: dict = {}
    for bid, spec in table.buffers.items():
        owner = aliases.get(bid, bid)
        start, end = lifetimes[bid]
        at, strides = placement(table, bid, memo)
        strides = strides_or_none(spec.shape, strides, spec.dtype)   # e.g. a channel block of an NCHW tensor
        buffers.append(Buffer(id=bid, value=spec.value, memory=spec.memory, offset=layout.offsets[owner] + at,
                              size=spec.size, start_ns=start, end_ns=end, kind=spec.kind,
                              alias_of=None if owner == bid else owner, dtype=spec.dtype, shape=spec.shape,
                              strides=strides))
    spilled: dict[str, int] = {}
    for s in spills:
        spilled[s.memory] = spilled.get(s.memory, 0) + s.bytes
    stats = {m: MemoryStats(**{**st.__dict__, "spilled_bytes": spilled.get(m, 0)})
             for m, st in layout.stats.items()}
    task_buffers = {tid: TaskBuffers(tuple(table.reads.get(tid, ())), tuple(table.writes.get(tid, ())))
                    for tid in (t.id for t in schedule.tasks)}
    details = {"seconds": round(seconds, 4), "methods": layout.methods, "aliases": len(aliases),
               "spills": len(spills), **details}
    plan = MemoryPlan(buffers=tuple(buffers), stats=stats, task_buffers=task_buffers, schedule=schedule,
                      spills=tuple(spills), constants_bytes=layout.constants_bytes, details=details)
    return replace(plan, reuse_deps=reuse_dependencies(plan))
