"""Insertion-based list scheduling, shared by HEFT, greedy and single-device.

Nodes are committed one at a time (all predecessors first). Committing a node on a device first books the
transfers its inputs need (earliest-finishing DMA engine per hop, reusing a copy already made), then the
compute in the earliest gap of the device that fits. ``trial`` answers "when would it finish there" without
booking anything, which is HEFT's earliest-finish-time question.

Committing an alias node books nothing: its output becomes available as ``hetc.schedule.tasks`` says (a
Region's with its input, eagerly; an Assemble's once every part is in DRAM, a join of several engines).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from hetc.ir.tiles import ASSEMBLE, REGION
from hetc.schedule.problem import SchedulingProblem
from hetc.schedule.tasks import (Plan, TaskKey, alias_memory, available_after, compute_key, copy_gate, handoff_ns,
                                 origin, transfer_key, must_reach)

LEAD_LOOKBACK = 64   # computes of a device looked back at for the bounded lead (a cheap estimate of the rule)

# When a copy is ready: (time, what made it): None (in DRAM from t=0), an engine name, or, for an Assemble's
# output, ((engine, time), ...) per engine that wrote a part (a waiter on another engine pays a semaphore).
Made = tuple[int, "str | None | tuple[tuple[str | None, int], ...]"]


@dataclass
class Lane:
    """Busy intervals of one engine, sorted and disjoint."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    keys: list[TaskKey] = field(default_factory=list)

    def earliest(self, ready: int, duration: int, extra: list[tuple[int, int]] = ()) -> int:
        """Earliest start >= ready of a gap of ``duration`` that avoids the booked and ``extra`` intervals."""
        i = bisect.bisect_right(self.ends, ready)
        start = ready
        busy = sorted(extra)
        j = 0
        while True:
            moved = False
            while i < len(self.starts) and self.starts[i] < start + duration:
                if self.ends[i] > start:
                    start, moved = self.ends[i], True
                i += 1
            while j < len(busy) and busy[j][0] < start + duration:
                if busy[j][1] > start:
                    start, moved = busy[j][1], True
                j += 1
            if not moved:
                return start

    def book(self, start: int, end: int, key: TaskKey) -> None:
        i = bisect.bisect_left(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)
        self.keys.insert(i, key)


class ListScheduler:
    def __init__(self, problem: SchedulingProblem) -> None:
        self.p = problem
        self.lanes: dict[str, Lane] = {e: Lane() for e in list(problem.device_memory) + list(problem.dmas)}
        self.placement: list[str | None] = [None] * problem.n
        self.finish: list[int] = [0] * problem.n
        # (value, memory) -> when the copy is ready; inputs and constants (and Regions of them) sit in DRAM at t=0
        self.copies: dict[tuple[int, str], Made] = {
            (r, problem.dram): (0, None) for v, s in enumerate(problem.values) if s.producer is None
            for r in problem.region_closure[v]}
        self.dma_choice: dict[tuple[int, str], str] = {}
        self.loaded: dict[int, int] = {}    # node -> bytes copied into its device's memory for it

    # ------------------------------------------------------------------ queries
    def ready_on(self, made: Made, engine: str | None) -> int:
        """When a task on ``engine`` may start after ``made`` (a semaphore when another engine made it)."""
        end, by = made
        if isinstance(by, tuple):
            return max(t + handoff_ns(e, engine, self.p.sync_ns) for e, t in by)
        return end + handoff_ns(by, engine, self.p.sync_ns)

    def _plan_copy(self, value: int, mem: str, pending: dict[str, list[tuple[int, int]]],
                   made: dict[tuple[int, str], tuple[int, str]], booked: list,
                   release: int = 0, stage: bool = False) -> tuple[int, str | None]:
        """The copy of ``value`` in ``mem``: existing, or planned from the source and on the engine that finish
        it earliest, its source's own copy planned first (planned transfers go to ``booked``; ``pending`` and
        ``made`` keep the plan self-consistent). With ``stage``, a value that may be staged is."""
        have = self.copies.get((value, mem)) or made.get((value, mem))
        if have is not None:
            return have
        p, born = self.p, self._origin(value)
        sources = p.copy_sources(value, born, mem)
        if len(sources) > 1 and (stage or (value, p.staging) in self.copies or (value, p.staging) in made):
            sources = [p.staging]   # staged once: fanned out from there, never read from DRAM again
        best = None
        for src in sources:
            # a second source is tried on copies of the plan, so that the first's bookings do not leak into it
            trial = (pending, made, booked) if len(sources) == 1 else (
                {e: list(spans) for e, spans in pending.items()}, dict(made), list(booked))
            source = self._plan_copy(value, src, *trial)
            for engine in p.engines_between(src, mem):
                dur = p.transfer_ns(value, engine)
                ready = max(self.ready_on(source, engine), release)
                start = self.lanes[engine].earliest(ready, dur, trial[0].get(engine, []))
                if best is None or start + dur < best[0]:
                    best = (start + dur, start, src, engine, trial)
        assert best is not None, f"no DMA engine copies into '{mem}'"
        end, start, src, engine, (plan_pending, plan_made, plan_booked) = best
        if plan_pending is not pending:
            pending.clear()
            pending.update(plan_pending)
            made.clear()
            made.update(plan_made)
            booked[:] = plan_booked
        booked.append((value, src, mem, engine, start, end))
        pending.setdefault(engine, []).append((start, end))
        made[(value, mem)] = (end, engine)
        return made[(value, mem)]

    def _plan_inputs(self, node: int, device: str) -> tuple[int, list[tuple[int, str, str, str, int, int]]]:
        """Ready time of all inputs in the device's memory, and the transfers (value, src, dst, engine,
        start, end) that would have to be booked for it. A value several tasks read is staged on its first
        copy when that does not delay the node and the read is bandwidth-bound: this list scheduler gives
        every DMA engine its full bandwidth, but DRAM's is shared (``hetc.schedule.dram``: the timing of the
        plan shares it), so a second read of many bytes is never free."""
        ready, booked = self._plan_inputs_once(node, device, frozenset())
        stage = frozenset(value for value, src, dst, engine, *_ in booked
                          if src == self.p.dram and len(self.p.copy_sources(value, src, dst)) > 1
                          and self._bandwidth_bound(value, engine))
        if stage:
            staged_ready, staged = self._plan_inputs_once(node, device, stage)
            if staged_ready <= ready:
                return staged_ready, staged
        return ready, booked

    def _plan_inputs_once(self, node: int, device: str,
                          stage: frozenset[int]) -> tuple[int, list[tuple[int, str, str, str, int, int]]]:
        home, ready, booked = self.p.home(device), 0, []
        pending: dict[str, list[tuple[int, int]]] = {}
        made: dict[tuple[int, str], tuple[int, str]] = {}
        release = self._lead_release(node, device)
        gate = self.p.gates.get(node)
        values = self.p.node_inputs[node]
        if gate is not None:   # the gate first: the node's predicated copies wait for it (tasks.copy_gate)
            values = (gate,) + tuple(v for v in values if v != gate)
        gate_release = release
        for value in values:
            gated = gate is not None and copy_gate(self.p, value, home, self.placement, (node, device)) == gate
            made_here = self._plan_copy(value, home, pending, made, booked, gate_release if gated else release,
                                        value in stage)
            ready = max(ready, self.ready_on(made_here, device))
            if value == gate:
                gate_release = max(release, made_here[0] + self.p.sync_ns)   # read once the gate is there
        return ready, booked

    def _bandwidth_bound(self, value: int, engine: str) -> bool:
        """Whether the copy of ``value`` by ``engine`` spends longer moving bytes than waiting: a read that is
        mostly latency takes little of DRAM's bandwidth, and staging it would add a second latency."""
        dma = self.p.dmas[engine]
        return self.p.values[value].nbytes / dma.bandwidth > dma.latency_ns

    def _lead_release(self, node: int, device: str) -> int:
        """When copies into the device's memory for ``node`` may start, by ``hetc.schedule.tasks.lead_deps``
        with ``node`` taken as the device's next compute (its last ``LEAD_LOOKBACK`` computes looked at)."""
        home = self.p.home(device)
        budget = self.p.capacity.get(home)
        if not budget:
            return 0
        load = sum(self.p.values[v].nbytes for v in self.p.node_inputs[node] if (v, home) not in self.copies
                   and not self.p.values[v].is_host and self._origin(v) != home)
        lane = self.lanes[device]
        for i in range(len(lane.keys) - 1, max(-1, len(lane.keys) - 1 - LEAD_LOOKBACK), -1):
            load += self.loaded.get(lane.keys[i][1], 0)
            if load > budget:
                return lane.ends[i] + self.p.sync_ns
        return 0

    def _origin(self, value: int) -> str:
        return origin(self.p, value, self.placement)

    def trial(self, node: int, device: str) -> int:
        """Finish time of ``node`` on ``device`` if it were committed now."""
        ready, _ = self._plan_inputs(node, device)
        dur = self.p.durations[node][device]
        return self.lanes[device].earliest(ready, dur) + dur

    # ------------------------------------------------------------------ booking
    def commit(self, node: int, device: str | None) -> int | None:
        """Book ``node`` on ``device`` with its input transfers and return its end; an alias node (device
        ignored) is settled instead."""
        if self.p.is_alias(node):
            self.settle(node)
            return None
        ready, transfers = self._plan_inputs(node, device)
        home = self.p.home(device)
        for value, src, dst, engine, start, end in transfers:
            self._book_transfer(value, dst, engine, start, end)
            if dst == home:
                self.loaded[node] = self.loaded.get(node, 0) + self.p.values[value].nbytes
        dur = self.p.durations[node][device]
        start = self.lanes[device].earliest(ready, dur)
        self.lanes[device].book(start, start + dur, compute_key(node))
        self.placement[node], self.finish[node] = device, start + dur
        self._born(node, self.p.home(device), (start + dur, device), copy_out=True)
        return start + dur

    def settle(self, node: int) -> None:
        """Make an alias node's output available (every predecessor committed). A Region's output became
        available with its root already (``_born``); an Assemble's once the tasks ``available_after`` names
        have ended (every part in the Assemble's memory)."""
        if self.p.alias_ops[node] == ASSEMBLE and self.p.node_outputs[node]:
            keys = available_after(self.p, self.p.node_outputs[node][0], self.placement)
            made = self._join([self._made_by(key) for key in keys])
            self._born(node, alias_memory(self.p, node, self.placement), made, copy_out=True)

    def _made_by(self, key: TaskKey) -> Made:
        """When a booked task ends, and on which engine."""
        if key[0] == "c":
            return self.finish[key[1]], self.placement[key[1]]
        return self.copies[(key[1], key[2])]

    def _join(self, made: list[Made]) -> Made:
        """Ready when all of ``made`` are: per engine the latest time, so each waiter pays only the semaphores
        it must."""
        latest: dict[str | None, int] = {}
        for end, by in made:
            for engine, t in (by if isinstance(by, tuple) else ((by, end),)):
                latest[engine] = max(latest.get(engine, 0), t)
        ready = max(latest.values(), default=0)
        if len(latest) <= 1:
            return ready, next(iter(latest), None)
        return ready, tuple(sorted(latest.items(), key=lambda kv: (kv[0] or "", kv[1])))

    def _born(self, node: int, mem: str, made: Made, copy_out: bool) -> None:
        """``node``'s outputs, and every Region of them, are available in ``mem`` as ``made`` says; with
        ``copy_out``, book the transfers of those that must reach another memory (``must_reach``)."""
        for value in self.p.node_outputs[node]:
            for member in self.p.region_closure[value]:
                self.copies[(member, mem)] = made
        if copy_out:
            for value in self.p.node_outputs[node]:
                for member in self.p.region_closure[value]:
                    for wanted in must_reach(self.p, member):
                        if wanted != mem:
                            self._copy_to(member, wanted)

    def _book_transfer(self, value: int, dst: str, engine: str, start: int, end: int) -> None:
        self.lanes[engine].book(start, end, transfer_key(value, dst))
        self.copies[(value, dst)] = (end, engine)
        self.dma_choice[(value, dst)] = engine

    def _copy_to(self, value: int, dst: str) -> None:
        booked: list = []
        self._plan_copy(value, dst, {}, {}, booked)
        for value, src, dst, engine, start, end in booked:
            self._book_transfer(value, dst, engine, start, end)

    def book_node(self, node: int, device: str, start: int) -> None:
        """Book a decision made elsewhere (CP-SAT); its input copies must be booked already."""
        end = start + self.p.durations[node][device]
        self.lanes[device].book(start, end, compute_key(node))
        self.placement[node], self.finish[node] = device, end
        self._born(node, self.p.home(device), (end, device), copy_out=False)

    def book_transfer(self, value: int, dst: str, engine: str, start: int) -> None:
        self._book_transfer(value, dst, engine, start, start + self.p.transfer_ns(value, engine))

    def clone(self) -> "ListScheduler":
        twin = ListScheduler.__new__(ListScheduler)
        twin.p = self.p
        twin.lanes = {e: Lane(list(l.starts), list(l.ends), list(l.keys)) for e, l in self.lanes.items()}
        twin.placement, twin.finish = list(self.placement), list(self.finish)
        twin.copies, twin.dma_choice, twin.loaded = dict(self.copies), dict(self.dma_choice), dict(self.loaded)
        return twin

    def plan(self) -> Plan:
        """The committed decisions (every node but the alias nodes must be placed)."""
        assert all(self.placement[i] is not None for i in self.p.compute_nodes), "list scheduling left nodes unplaced"
        orders = {e: list(lane.keys) for e, lane in self.lanes.items() if lane.keys}
        return Plan(tuple(self.placement), dict(self.dma_choice), orders)


def replay(problem: SchedulingProblem, placement: list[str | None], order: list[int]) -> Plan:
    """The plan of a placement decided elsewhere: compute nodes committed in ``order`` (predecessors first
    whatever it says), each on its device as early as its engine and operands allow, alias nodes settled as
    soon as they can be. The DMA queues are this scheduler's, so every copy obeys the bounded lead."""
    position = {node: k for k, node in enumerate(order)}
    rank = [float("inf") if problem.is_alias(i) else -float(position.get(i, problem.n + i))
            for i in range(problem.n)]
    scheduler = ListScheduler(problem)
    for node in priority_order(problem, rank):
        scheduler.commit(node, placement[node])
    return scheduler.plan()


def upward_rank(problem: SchedulingProblem, placement: list[str] | None = None) -> list[float]:
    """HEFT's upward rank: mean duration (or the placed one) plus the heaviest path to a sink, counting the
    mean transfer time of each edge."""
    mean_bw = sum(d.bandwidth for d in problem.dmas.values()) / max(1, len(problem.dmas))
    mean_lat = sum(d.latency_ns for d in problem.dmas.values()) / max(1, len(problem.dmas))
    rank = [0.0] * problem.n
    edge_cost: dict[tuple[int, int], float] = {}
    for spec in problem.values:
        if spec.producer is not None and problem.dmas:
            for c in spec.consumers:
                if problem.alias_ops.get(c) == REGION:
                    continue  # a Region reads its input in place: no transfer on that edge
                key = (spec.producer, c)
                edge_cost[key] = max(edge_cost.get(key, 0.0), mean_lat + spec.nbytes / mean_bw)
    for node in reversed(range(problem.n)):
        durs = problem.durations[node]
        if problem.is_alias(node):
            own = 0.0
        else:
            own = durs[placement[node]] if placement else sum(durs.values()) / len(durs)
        rank[node] = own + max((edge_cost.get((node, s), 0.0) + rank[s] for s in problem.successors[node]),
                               default=0.0)
    return rank


def priority_order(problem: SchedulingProblem, rank: list[float]) -> list[int]:
    """Nodes by decreasing rank, never before their predecessors (ties: topological index)."""
    import heapq
    indegree = [len(p) for p in problem.predecessors]
    heap = [(-rank[i], i) for i in range(problem.n) if indegree[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for s in problem.successors[i]:
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(heap, (-rank[s], s))
    return order
