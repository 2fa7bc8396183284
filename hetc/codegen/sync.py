"""Which cross-engine orderings need a semaphore, and which signal each wait names.

Two kinds of ordering constraint exist between tasks:

* data dependencies (``Task.deps``: producer -> transfer -> consumer);
* storage dependencies: when the memory planner reuses bytes, every task touching the old buffer must end
  before the task writing the new one starts (``MemoryPlan.reuse_deps``, stated once in hetc.memory.reuse).
  The schedule respects this in time, but only a semaphore makes it hold when real durations differ from
  planned ones.

Semaphores are monotonic counters, one per signalling engine (``sem.<engine>``); a task that somebody must wait
for is followed by a ``signal``; its consumer waits until the counter reaches that signal's ordinal, which
(program order) also covers every earlier task of that engine. A wait is emitted only when the happens-before
relation built so far (program order + earlier waits, tracked with vector clocks) does not already order the
pair, and a wait implied by another wait of the same task is dropped: the transitive reduction.

A predicated task (hetc.ir.predicates) its gate turns off needs only its gate (``skippable_deps``): its other
waits are predicated and skipped with it, and they count for nothing in the happens-before of what follows.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from hetc.codegen.program import Compute, Dma
from hetc.errors import ScheduleError
from hetc.memory.artifact import MemoryPlan
from hetc.schedule.artifact import Task


def semaphore_name(engine: str) -> str:
    return f"sem.{engine}"


@dataclass(frozen=True)
class SyncPlan:
    waits: dict[int, list[tuple[str, int]]]   # task id -> [(semaphore, count)] to wait for before it starts
    signals: frozenset[int]                   # task ids followed by a signal on their engine's semaphore
    # task id -> the waits a predicated task skips with itself: those only its ``skippable`` deps need
    skipped_with: dict[int, list[tuple[str, int]]] = field(default_factory=dict)


def plan_sync(lanes: dict[str, list[Task]], deps: dict[int, set[int]],
              skippable: dict[int, set[int]] | None = None) -> SyncPlan:
    """The waits and signals that order every dependency in ``deps`` (task id -> ids that must end first).

    ``skippable`` (task id -> a subset of its deps): what a predicated task no longer needs when its gate is
    off (``skippable_deps``). Their waits are predicated, come after the task's plain ones and count for
    nothing later: a task's happens-before, which the transitive reduction of every later wait relies on,
    is what its plain waits give it, so it holds whether the predicated ones ran or not."""
    skippable = skippable or {}
    engines = list(lanes)
    n_engines = len(engines)
    where: dict[int, tuple[int, int]] = {}
    for e, lane in enumerate(engines):
        for i, t in enumerate(lanes[lane]):
            where[t.id] = (e, i)
    order = _topological(lanes, deps, where)

    clock: dict[int, list[int]] = {}   # task id -> last index of each engine known to have ended when it ends
    chosen: dict[int, list[tuple[int, int]]] = {}  # task id -> [(engine, index)] of the signals it waits for
    chosen_optional: dict[int, list[tuple[int, int]]] = {}   # ... and of those it skips with itself
    signalling: set[int] = set()
    for t in order:
        e, i = where[t.id]
        prev = lanes[engines[e]][i - 1].id if i > 0 else None
        vc = list(clock[prev]) if prev is not None else [-1] * n_engines
        optional = skippable.get(t.id, set())
        need: dict[int, int] = {}
        need_optional: dict[int, int] = {}
        for p in deps.get(t.id, ()):
            pe, pi = where[p]
            if pe == e:
                if pi >= i:
                    raise ScheduleError(f"task {p} must end before task {t.id} but comes after it on engine "
                                        f"'{engines[e]}'; the schedule is inconsistent")
                continue
            wanted = need_optional if p in optional else need
            if vc[pe] < pi and wanted.get(pe, -1) < pi:
                wanted[pe] = pi
        kept = _reduced(need, vc, clock, lanes, engines)
        for pe, pi in kept:
            src = lanes[engines[pe]][pi].id
            signalling.add(src)
            vc = [max(a, b) for a, b in zip(vc, clock[src])]
        kept_optional = _reduced(need_optional, vc, clock, lanes, engines)
        signalling.update(lanes[engines[pe]][pi].id for pe, pi in kept_optional)
        vc[e] = i
        clock[t.id] = vc
        chosen[t.id] = kept
        if kept_optional:
            chosen_optional[t.id] = kept_optional

    ordinal: dict[int, int] = {}
    for lane in engines:
        count = 0
        for t in lanes[lane]:
            if t.id in signalling:
                count += 1
                ordinal[t.id] = count

    def named(picked: dict[int, list[tuple[int, int]]]) -> dict[int, list[tuple[str, int]]]:
        return {tid: [(semaphore_name(engines[pe]), ordinal[lanes[engines[pe]][pi].id]) for pe, pi in sorted(ks)]
                for tid, ks in picked.items() if ks}

    return SyncPlan(waits=named(chosen), signals=frozenset(signalling), skipped_with=named(chosen_optional))


def _reduced(need: dict[int, int], vc: list[int], clock: dict[int, list[int]], lanes: dict[str, list[Task]],
             engines: list[str]) -> list[tuple[int, int]]:
    """The (engine, index) signals of ``need`` still to wait for: not already ordered by ``vc`` (the task's
    happens-before so far), nor implied by another of them."""
    need = {pe: pi for pe, pi in need.items() if vc[pe] < pi}
    return [(pe, pi) for pe, pi in need.items()
            if not any(clock[lanes[engines[f]][fi].id][pe] >= pi for f, fi in need.items() if f != pe)]


def skippable_deps(moves: dict[int, Compute | Dma], data: dict[int, set[int]], reuse: dict[int, set[int]],
                   plan: MemoryPlan) -> dict[int, set[int]]:
    """Per predicated task (``moves``: task id -> its instruction), the deps it does not need when its gate
    turns it off (hetc.schedule.tasks.skipped_deps states the rule): all but the tasks that write its gate's
    bytes. A copy then moves nothing and a compute reads nothing. A compute that writes zeros instead
    (``zero_fill``) skips only the producers of its inputs (``data`` deps) that share no bytes with its
    outputs: the earlier users of those bytes (``reuse``) it still waits for."""
    if all(move.when is None for move in moves.values()):
        return {}
    placed = {b.id for b in plan.buffers}   # (a host value has no bytes)
    written: dict[int, set[str]] = {tid: {plan.buffer(b).owner for b in tb.writes if b in placed}
                                    for tid, tb in plan.task_buffers.items()}
    out: dict[int, set[int]] = {}
    for tid, move in moves.items():
        if move.when is None:
            continue
        kept = {move.when.storage}
        if isinstance(move, Compute) and move.zero_fill:
            kept.update(o.storage for o in move.outputs)
            candidates = data.get(tid, set()) - reuse.get(tid, set())
        else:
            candidates = data.get(tid, set()) | reuse.get(tid, set())
        skippable = {d for d in candidates if not written.get(d, set()) & kept}
        if skippable:
            out[tid] = skippable
    return out


def _topological(lanes: dict[str, list[Task]], deps: dict[int, set[int]],
                 where: dict[int, tuple[int, int]]) -> list[Task]:
    """Tasks in an order consistent with program order and ``deps`` (earliest planned start first)."""
    by_id = {t.id: t for lane in lanes.values() for t in lane}
    succs: dict[int, list[int]] = {tid: [] for tid in by_id}
    indegree = dict.fromkeys(by_id, 0)
    for lane in lanes.values():
        for a, b in zip(lane, lane[1:]):
            succs[a.id].append(b.id)
            indegree[b.id] += 1
    for tid, ps in deps.items():
        for p in ps:
            if p not in by_id:
                raise ScheduleError(f"task {tid} depends on unknown task {p}; the schedule is inconsistent")
            succs[p].append(tid)
            indegree[tid] += 1
    ready = [(t.start_ns, t.end_ns, t.id) for t in by_id.values() if indegree[t.id] == 0]
    heapq.heapify(ready)
    order: list[Task] = []
    while ready:
        *_, tid = heapq.heappop(ready)
        order.append(by_id[tid])
        for s in succs[tid]:
            indegree[s] -= 1
            if indegree[s] == 0:
                t = by_id[s]
                heapq.heappush(ready, (t.start_ns, t.end_ns, s))
    if len(order) != len(by_id):
        stuck = sorted(tid for tid, d in indegree.items() if d > 0)[:5]
        raise ScheduleError(f"dependencies and engine order form a cycle through tasks {stuck}; "
                            "the schedule is inconsistent")
    return order
