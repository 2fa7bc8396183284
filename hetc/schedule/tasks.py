"""The task graph a placement implies, and exact ASAP timing of it for given engine orders.

This module is the single statement of the execution model inside the scheduler: which copies a value needs
(one per destination memory, shared by its consumers there; an intermediate DRAM copy reused), which task
each task waits for (its data, for a copy into a scratchpad the compute whose end makes room for it:
``lead_deps``, and for a predicated copy its gate at the destination: ``copy_gate``; a predicated task its
gate turns off only that: ``skipped_deps``), and when a wait costs a
semaphore, and how the tasks streaming through DRAM share its bandwidth (``hetc.schedule.dram``). HEFT,
greedy and CP-SAT all end in ``Plan`` and are timed by ``time_plan``, so every strategy's artifact obeys the
same rules exactly; the memory planner re-times with ``earliest_times`` and reschedules a moved node through
the same list scheduler (hetc.memory.retime, fallback).

Alias nodes (``hetc.ir.tiles``: Region, Assemble) are not tasks and run on no device. The output of one lives
in one memory (``origin``): a Region's where its input was born, an Assemble's in DRAM or, on a target that
stages through an on-chip L2, there (``hetc.schedule.problem.assembly_memories`` decides). It is available
there once the tasks ``available_after`` names have ended: a Region's input's; for an Assemble, per part its
producer (a part born in the Assemble's memory) or the part's transfer there, which writes straight into the
output's bytes (so every part born elsewhere gets that transfer: ``must_reach``). A consumer homed in the
alias's memory reads it in place and waits for those tasks; a consumer elsewhere gets a transfer of the alias
value (its own bytes, a strided DMA) from that memory, which waits for them.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Optional, Sequence

from hetc.errors import ScheduleError
from hetc.ir.predicates import shared_gate
from hetc.ir.tiles import REGION
from hetc.schedule.dram import SharedDram, dram_ask
from hetc.schedule.problem import SchedulingProblem

# A task is named by a key: ("c", node) for a compute task, ("x", value, dst_memory) for a transfer.
TaskKey = tuple


def handoff_ns(producer: str | None, consumer: str | None, sync_ns: int) -> int:
    """What a dependency adds to its producer's end before the consumer may start: nothing on the same engine
    (program order already orders them) or when no engine produced it (an input in DRAM from the start), a
    semaphore (``sync_ns``) from another engine. Every timing of a dependency uses this."""
    return 0 if producer is None or producer == consumer else sync_ns


def compute_key(node: int) -> TaskKey:
    return ("c", node)


def transfer_key(value: int, dst: str) -> TaskKey:
    return ("x", value, dst)


Placement = Sequence[Optional[str]]   # per node index its device; None for an alias node


def origin(problem: SchedulingProblem, value: int, placement: Placement) -> str:
    """The memory a value is born in: its producer's home, or DRAM for inputs and constants; a Region's output
    is in the memory its input is born in, an Assemble's output in its ``assembly_memory``."""
    producer = problem.values[value].producer
    if producer is None:
        return problem.dram
    if problem.is_alias(producer):
        return alias_memory(problem, producer, placement)
    return problem.home(placement[producer])


def alias_memory(problem: SchedulingProblem, node: int, placement: Placement) -> str:
    """The memory an alias node's output lives in: its input's origin for a Region; for an Assemble, the
    problem's ``assembly_memory``."""
    if problem.alias_ops[node] == REGION:
        return origin(problem, problem.node_inputs[node][0], placement)
    return problem.assembly_memory(node)


def available_after(problem: SchedulingProblem, value: int, placement: Placement) -> tuple[TaskKey, ...]:
    """The tasks after whose end a value is available in its origin memory: its producer; nothing for an
    input or constant; a Region's input's; for an Assemble, per part the tasks that make the part available
    in the Assemble's memory (its own, when born there, else its transfer there)."""
    producer = problem.values[value].producer
    if producer is None:
        return ()
    op = problem.alias_ops.get(producer)
    if op is None:
        return (compute_key(producer),)
    if op == REGION:
        return available_after(problem, problem.node_inputs[producer][0], placement)
    deps: dict[TaskKey, None] = {}
    joined = problem.assembly_memory(producer)
    for part in problem.node_inputs[producer]:
        if origin(problem, part, placement) == joined:
            deps.update(dict.fromkeys(available_after(problem, part, placement)))
        else:
            deps[transfer_key(part, joined)] = None
    return tuple(deps)


def must_reach(problem: SchedulingProblem, value: int) -> tuple[str, ...]:
    """The memories a value must reach whoever reads it: DRAM for a graph output, and for a part an Assemble
    writes in place into its output, that output's memory."""
    wanted = [problem.dram] if problem.values[value].is_output else []
    joined = problem.assembled.get(value)
    if joined is not None and joined not in wanted:
        wanted.append(joined)
    return tuple(wanted)


def copies_needed(problem: SchedulingProblem, value: int, placement: Placement,
                  dma_choice: dict[tuple[int, str], str] | None = None) -> list[tuple[str, str]]:
    """(src, dst) memory pairs of the transfers of one value, intermediate copies (DRAM, staging) first.
    Each copy is made from the source its DMA engine reads (``SchedulingProblem.source_by``; the route's
    last hop when ``dma_choice`` has no engine for it), and that source needs a copy of its own unless the
    value is born there. A host value needs none: only CPUs (homed in DRAM) touch it, and it stays in the
    host's heap. Alias consumers want no copy: a Region reads its input in place, an Assemble wants its part
    in DRAM."""
    spec = problem.values[value]
    if spec.is_host:
        return []
    born = origin(problem, value, placement)
    wanted = {problem.home(placement[c]) for c in problem.compute_consumers[value]}
    wanted.update(must_reach(problem, value))
    wanted.discard(born)
    choice = dma_choice or {}
    source: dict[str, str] = {}
    pending = sorted(wanted)
    while pending:
        dst = pending.pop()
        if dst not in source:
            source[dst] = problem.source_by(value, born, dst, choice.get((value, dst)))
            if source[dst] != born:
                pending.append(source[dst])

    def hops(memory: str) -> int:
        return 0 if source[memory] == born else 1 + hops(source[memory])

    return [(source[m], m) for m in sorted(source, key=lambda m: (hops(m), m))]


def copy_gate(problem: SchedulingProblem, value: int, dst: str, placement: Placement,
              trying: tuple[int, str] | None = None) -> int | None:
    """The gate a copy of ``value`` into ``dst`` is predicated on (``hetc.ir.predicates.shared_gate`` over the
    nodes reading it there), or None. A list scheduler's unplaced nodes (None in ``placement``) are not
    counted, but for the (node, device) it is ``trying``."""
    if dst in must_reach(problem, value):
        return None

    def device(c: int) -> str | None:
        return trying[1] if trying is not None and c == trying[0] else placement[c]
    return shared_gate((problem.gates.get(c) for c in problem.compute_consumers[value]
                        if device(c) is not None and problem.home(device(c)) == dst), value)


def gate_ready(problem: SchedulingProblem, gate: int, memory: str, placement: Placement) -> tuple[TaskKey, ...]:
    """The tasks after which a predicated task in ``memory`` may read its gate there: the gate's copy into
    ``memory``, or what makes it available when it is born there."""
    if origin(problem, gate, placement) == memory:
        return available_after(problem, gate, placement)
    return (transfer_key(gate, memory),)


def own_ns(problem: SchedulingProblem, key: TaskKey, engine: str) -> int:
    """A task's duration with DRAM to itself, on ``engine`` (``time_plan`` may stretch it where DRAM is
    shared): its node's cost there, or its copy's."""
    return problem.durations[key[1]][engine] if key[0] == "c" else problem.transfer_ns(key[1], engine)


def skipped_deps(problem: SchedulingProblem, key: TaskKey, placement: Placement) -> tuple[TaskKey, ...]:
    """What a predicated task waits for in a run whose gate turns it off: only its gate, in the memory where
    it reads it to decide (``gate_ready``). Skipped, a copy moves nothing and a compute reads none of its
    inputs (a zero-filling one writes zeros, whose bytes' earlier users the bundle's semaphores order:
    hetc.codegen.sync), so waiting for their producers or for room would only hold its engine's queue."""
    if key[0] == "c":
        gate, memory = problem.gates[key[1]], problem.home(placement[key[1]])
    else:
        gate, memory = copy_gate(problem, key[1], key[2], placement), key[2]
    if gate is None:
        raise ValueError(f"task {key} is not predicated")
    return gate_ready(problem, gate, memory, placement)


@dataclass(frozen=True)
class TaskSpec:
    key: TaskKey
    engine: str
    duration: int
    deps: tuple[TaskKey, ...]


def derive_tasks(problem: SchedulingProblem, placement: Placement,
                 dma_choice: dict[tuple[int, str], str]) -> dict[TaskKey, TaskSpec]:
    """Every task the placement implies, in a topological order (dicts keep insertion order). An alias node
    has no task; its output's copies follow the tasks that make it available.

    ``dma_choice`` maps (value, dst memory) to the DMA engine doing that copy; a missing entry takes the
    first engine serving the hop."""
    tasks: dict[TaskKey, TaskSpec] = {}

    def make_copies(value: int) -> None:
        born = origin(problem, value, placement)
        for src, dst in copies_needed(problem, value, placement, dma_choice):
            engine = dma_choice.get((value, dst)) or problem.engines_between(src, dst)[0]
            if engine not in problem.engines_between(src, dst):
                raise ScheduleError(f"DMA engine '{engine}' does not connect '{src}' and '{dst}'")
            if src != born:
                deps: tuple[TaskKey, ...] = (transfer_key(value, src),)
            else:
                deps = available_after(problem, value, placement)
            gate = copy_gate(problem, value, dst, placement)
            if gate is not None:   # the DMA reads the gate at its destination to decide
                deps = tuple(dict.fromkeys(deps + gate_ready(problem, gate, dst, placement)))
            key = transfer_key(value, dst)
            tasks[key] = TaskSpec(key, engine, problem.transfer_ns(value, engine), deps)

    for value, spec in enumerate(problem.values):
        if spec.producer is None:
            make_copies(value)
    for node in range(problem.n):
        if problem.is_alias(node):
            for value in problem.node_outputs[node]:
                make_copies(value)
            continue
        device = placement[node]
        if device not in problem.durations[node]:
            raise ScheduleError(f"node '{problem.node_names[node]}' cannot run on '{device}'")
        home = problem.home(device)
        deps = []
        for value in problem.node_inputs[node]:
            if problem.values[value].is_host or origin(problem, value, placement) == home:
                deps.extend(available_after(problem, value, placement))
            else:
                deps.append(transfer_key(value, home))
        key = compute_key(node)
        tasks[key] = TaskSpec(key, device, problem.durations[node][device], tuple(dict.fromkeys(deps)))
        for value in problem.node_outputs[node]:
            make_copies(value)
    return tasks


@dataclass
class Plan:
    """A complete decision: placement (None for an alias node), DMA engine per copy, and the task order on
    every engine."""

    placement: tuple[str | None, ...]
    dma_choice: dict[tuple[int, str], str]
    orders: dict[str, list[TaskKey]]


def asap(problem: SchedulingProblem, tasks: dict[TaskKey, TaskSpec],
         orders: dict[str, list[TaskKey]]) -> dict[TaskKey, tuple[int, int]]:
    """Earliest start of every task given data deps (+ sync across engines) and each engine's order.

    Raises ValueError when the orders contradict the data dependencies (a cycle)."""
    return earliest_times(tasks, orders, problem.sync_ns)


def earliest_times(tasks: dict[TaskKey, TaskSpec], orders: dict[str, list[TaskKey]], sync_ns: int,
                   release: dict[TaskKey, int] | None = None,
                   order_hint: list[TaskKey] | None = None) -> dict[TaskKey, tuple[int, int]]:
    """The timing rule itself: a task starts once the previous task on its engine has ended, and each
    dependency has ended (plus ``sync_ns`` when it ran on another engine: a semaphore), and not before its
    ``release`` time when given (the memory planner re-times a schedule without moving anything earlier).

    ``order_hint`` is a likely topological order (a re-timed schedule's planned starts): when every task's
    predecessors come before it there, the times are computed in one pass over it, without building the
    graph; the result is the same, since both compute each start from its predecessors' final ends.

    Raises ValueError when the orders contradict the data dependencies (a cycle)."""
    if order_hint is not None and len(order_hint) == len(tasks):
        times = _one_pass(tasks, orders, sync_ns, release or {}, order_hint)
        if times is not None:
            return times
    times, _ = _kahn(tasks, orders, sync_ns, release or {})
    if len(times) != len(tasks):
        raise ValueError("engine orders contradict the data dependencies")
    return times


def shared_times(tasks: dict[TaskKey, TaskSpec], orders: dict[str, list[TaskKey]], sync_ns: int,
                 release: dict[TaskKey, int], asks: dict[TaskKey, int]) -> dict[TaskKey, tuple[int, int]]:
    """``earliest_times`` with the tasks streaming through DRAM sharing its bandwidth (``asks``: task -> its
    share, ``hetc.schedule.dram``), as ``time_plan`` times a plan: a task lasts longer than its duration
    where the shares of the tasks running with it exceed the bandwidth. Raises ValueError on a cycle."""
    times, _ = _kahn(tasks, orders, sync_ns, release, asks=asks)
    if len(times) != len(tasks):
        raise ValueError("engine orders contradict the data dependencies")
    return times


def _kahn(tasks: dict[TaskKey, TaskSpec], orders: dict[str, list[TaskKey]], sync_ns: int,
          release: dict[TaskKey, int], soft: dict[TaskKey, TaskKey] | None = None,
          asks: dict[TaskKey, int] | None = None,
          ) -> tuple[dict[TaskKey, tuple[int, int]], set[TaskKey]]:
    """``earliest_times`` by Kahn's algorithm, with ``soft`` dependencies (task -> the task it waits for)
    that are dropped where they would close a cycle: when every task left waits for something, the first
    (in ``tasks``' order) that waits only for soft dependencies starts without them. With ``asks`` (task ->
    its share of DRAM bandwidth, ``hetc.schedule.dram``), the tasks streaming through DRAM at one time share
    its bandwidth and last longer when they ask for more (``_timed_shared``). Returns the times (the tasks on
    or after a hard cycle missing) and the tasks whose soft dependency was dropped."""
    soft = soft or {}
    preds: dict[TaskKey, list[tuple[TaskKey, int]]] = {k: [] for k in tasks}
    for t in tasks.values():
        for d in t.deps:
            preds[t.key].append((d, handoff_ns(tasks[d].engine, t.engine, sync_ns)))
    for engine, keys in orders.items():
        for a, b in zip(keys, keys[1:]):
            preds[b].append((a, 0))
    listed = {k for keys in orders.values() for k in keys}
    if listed != set(tasks):
        raise ValueError(f"engine orders miss {len(set(tasks) - listed)} tasks")
    hard = {k: len(p) for k, p in preds.items()}
    for k, d in soft.items():
        preds[k].append((d, handoff_ns(tasks[d].engine, tasks[k].engine, sync_ns)))
    succs: dict[TaskKey, list[TaskKey]] = {k: [] for k in tasks}
    for k, ps in preds.items():
        for p, _ in ps:
            succs[p].append(k)
    indegree = {k: len(p) for k, p in preds.items()}
    times: dict[TaskKey, tuple[int, int]] = {}
    dropped: set[TaskKey] = set()

    def earliest(k: TaskKey) -> int:
        ps = preds[k] if k not in dropped else preds[k][:hard[k]]
        return max(max((times[p][1] + g for p, g in ps), default=0), release.get(k, 0))

    run = partial(_timed_shared, asks=asks) if asks else _timed
    ready = [k for k, d in indegree.items() if d == 0]
    while True:
        run(tasks, ready, succs, indegree, times, earliest)
        if len(times) == len(tasks) or not soft:
            return times, dropped
        stalled = next((k for k in soft if k not in times and k not in dropped and indegree[k] == 1
                        and soft[k] not in times), None)
        if stalled is None:
            return times, dropped
        dropped.add(stalled)
        ready = [stalled]


def _timed(tasks: dict[TaskKey, TaskSpec], ready: list[TaskKey], succs: dict[TaskKey, list[TaskKey]],
           indegree: dict[TaskKey, int], times: dict[TaskKey, tuple[int, int]],
           earliest: Callable[[TaskKey], int]) -> None:
    """Time what ``ready`` releases, in any order (each start depends only on its predecessors' ends)."""
    while ready:
        k = ready.pop()
        start = earliest(k)
        times[k] = (start, start + tasks[k].duration)
        for s in succs[k]:
            indegree[s] -= 1
            if indegree[s] == 0 and s not in times:
                ready.append(s)


def _timed_shared(tasks: dict[TaskKey, TaskSpec], ready: list[TaskKey], succs: dict[TaskKey, list[TaskKey]],
                  indegree: dict[TaskKey, int], times: dict[TaskKey, tuple[int, int]],
                  earliest: Callable[[TaskKey], int], asks: dict[TaskKey, int]) -> None:
    """``_timed`` with DRAM shared: events in time order (ends before starts at one instant, as in the
    simulator), a DRAM user's end moving whenever another joins or leaves (``SharedDram``); an end is
    rounded up to the ns."""
    events: list[tuple[float, int, int, TaskKey, int]] = []
    count = itertools.count()
    dram = SharedDram(lambda t, key, version: heapq.heappush(events, (t, 0, next(count), key, version)))
    for k in ready:
        heapq.heappush(events, (earliest(k), 1, next(count), k, 0))
    started: dict[TaskKey, int] = {}
    while events:
        t, phase, _, k, version = heapq.heappop(events)
        if phase == 1:
            started[k] = int(t)
            if asks.get(k):
                dram.join(k, t, tasks[k].duration, asks[k])
            else:
                heapq.heappush(events, (t + tasks[k].duration, 0, next(count), k, 0))
            continue
        if asks.get(k):
            if not dram.current(k, version):
                continue          # an end the sharing has moved since
            dram.leave(k, t)
        times[k] = (started[k], max(started[k], math.ceil(t - 1e-6)))
        for s in succs[k]:
            indegree[s] -= 1
            if indegree[s] == 0 and s not in times:
                heapq.heappush(events, (earliest(s), 1, next(count), s, 0))


def _one_pass(tasks: dict[TaskKey, TaskSpec], orders: dict[str, list[TaskKey]], sync_ns: int,
              release: dict[TaskKey, int], order: list[TaskKey]) -> dict[TaskKey, tuple[int, int]] | None:
    """``earliest_times`` along ``order``; None as soon as a predecessor comes later in it (or a task is
    missing from the orders), and the caller takes the general path."""
    previous: dict[TaskKey, TaskKey | None] = {}
    for keys in orders.values():
        previous.update(zip(keys, [None, *keys[:-1]]))
    if len(previous) != len(tasks):
        return None
    ends: dict[TaskKey, int] = {}
    times: dict[TaskKey, tuple[int, int]] = {}
    for k in order:
        task = tasks[k]
        start = release.get(k, 0)
        before = previous[k]
        if before is not None:
            end = ends.get(before)
            if end is None:
                return None
            start = max(start, end)
        for d in task.deps:
            end = ends.get(d)
            if end is None:
                return None
            start = max(start, end + handoff_ns(tasks[d].engine, task.engine, sync_ns))
        ends[k] = start + task.duration
        times[k] = (start, ends[k])
    return times if len(times) == len(tasks) else None


def lead_window(loaded: Sequence[int], budget: int) -> list[int | None]:
    """Per position k in a device's compute order, the earlier position j whose end a copy first read at k
    waits for (None: no wait): the latest j < k such that the bytes copied in for the readers j..k exceed
    ``budget`` (they cannot all be resident at once). ``loaded[i]``: bytes of the copies first read at i."""
    prefix = [0]
    for b in loaded:
        prefix.append(prefix[-1] + b)
    waits: list[int | None] = []
    for k in range(len(loaded)):
        j = min(k - 1, bisect.bisect_left(prefix, prefix[k + 1] - budget) - 1)
        waits.append(j if j >= 0 else None)
    return waits


def lead_deps(problem: SchedulingProblem, tasks: dict[TaskKey, TaskSpec],
              orders: dict[str, list[TaskKey]]) -> dict[TaskKey, TaskKey]:
    """The bounded lead: copy -> the compute on its readers' device it waits for (``lead_window`` over that
    device's order, the budget its memory's capacity). Only copies into a bounded device memory whose waiters
    are all compute tasks on that one device wait. The scheduler itself does not see the rest of what the
    memory holds (outputs, copies read again later); the planner fits that, and rarely has to move anything
    (docs/scheduling.md, "Bounded lead")."""
    waiters: dict[TaskKey, list[TaskKey]] = {}
    for t in tasks.values():
        for d in t.deps:
            waiters.setdefault(d, []).append(t.key)
    deps: dict[TaskKey, TaskKey] = {}
    for device, memory in problem.device_memory.items():
        capacity = problem.capacity.get(memory)
        computes = [k for k in orders.get(device, ()) if k[0] == "c"]
        if not capacity or not computes:
            continue
        position = {k: i for i, k in enumerate(computes)}
        loaded = [0] * len(computes)
        first: dict[TaskKey, int] = {}
        for key in tasks:
            if key[0] == "x" and key[2] == memory:
                readers = waiters.get(key, ())
                if readers and all(r in position for r in readers):
                    first[key] = min(position[r] for r in readers)
                    loaded[first[key]] += problem.values[key[1]].nbytes
        waits = lead_window(loaded, capacity)
        for key, k in first.items():
            if waits[k] is not None:
                deps[key] = computes[waits[k]]
    return deps


def time_plan(problem: SchedulingProblem, plan: Plan) -> tuple[dict[TaskKey, TaskSpec],
                                                                dict[TaskKey, tuple[int, int]]]:
    """Every task of ``plan`` and its times. Copies into device memories wait as ``lead_deps`` says, except
    where the plan's engine orders were built without that rule and the wait would close a cycle: such a
    copy keeps its place in its DMA queue and starts without it. A task streaming through DRAM where its
    bandwidth is taken runs slower, for longer (``hetc.schedule.dram``); the longer duration becomes the
    task's own, so every later re-timing keeps it."""
    tasks = derive_tasks(problem, plan.placement, plan.dma_choice)
    leads = lead_deps(problem, tasks, plan.orders)
    asks = {k: a for k, t in tasks.items() if (a := dram_ask(problem, k, t.engine, t.duration))}
    times, dropped = _kahn(tasks, plan.orders, problem.sync_ns, {}, leads, asks)
    if len(times) != len(tasks):
        raise ValueError("engine orders contradict the data dependencies")
    waits = {k: d for k, d in leads.items() if k not in dropped}
    specs = {}
    for k, t in tasks.items():
        lasts = times[k][1] - times[k][0]   # longer than its duration where DRAM slowed it
        specs[k] = t if k not in waits and lasts == t.duration else \
            replace(t, deps=t.deps + ((waits[k],) if k in waits else ()), duration=lasts)
    return specs, times


def makespan_of(times: dict[TaskKey, tuple[int, int]]) -> int:
    return max((e for _, e in times.values()), default=0)


def orders_from_times(tasks: dict[TaskKey, TaskSpec], starts: dict[TaskKey, float]) -> dict[str, list[TaskKey]]:
    """Engine orders by start time; ties keep the topological order of ``tasks``."""
    rank = {k: i for i, k in enumerate(tasks)}
    orders: dict[str, list[TaskKey]] = {}
    for k in sorted(tasks, key=lambda k: (starts[k], rank[k])):
        orders.setdefault(tasks[k].engine, []).append(k)
    return orders
