"""Insertion-based list scheduling, shared by HEFT, greedy and single-device.

Nodes are committed one at a time (all predecessors first). Committing a node on a device first books the
transfers its inputs need (earliest-finishing DMA engine per hop, reusing a copy already made), then the
compute in the earliest gap of the device that fits. ``trial`` answers "when would it finish there" without
booking anything, which is HEFT's earliest-finish-time question.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from hetc.schedule.problem import SchedulingProblem
from hetc.schedule.tasks import Plan, TaskKey, compute_key, transfer_key


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
        # (value, memory) -> (ready time, engine that made the copy); inputs and constants sit in DRAM at t=0
        self.copies: dict[tuple[int, str], tuple[int, str | None]] = {
            (v, problem.dram): (0, None) for v, s in enumerate(problem.values) if s.producer is None}
        self.dma_choice: dict[tuple[int, str], str] = {}

    # ------------------------------------------------------------------ queries
    def _after(self, made: tuple[int, str | None], engine: str) -> int:
        end, by = made
        return end if by is None or by == engine else end + self.p.sync_ns

    def _plan_copy(self, value: int, mem: str, pending: dict[str, list[tuple[int, int]]],
                   made: dict[tuple[int, str], tuple[int, str]], booked: list) -> tuple[int, str | None]:
        """The copy of ``value`` in ``mem``: existing, or planned hop by hop on the earliest-finishing engine
        (planned transfers go to ``booked``; ``pending`` and ``made`` keep the plan self-consistent)."""
        p = self.p
        if (value, mem) not in self.copies and (value, mem) not in made:
            for src, dst in p.route(self._origin(value), mem):
                if (value, dst) in self.copies or (value, dst) in made:
                    continue
                source = self.copies.get((value, src)) or made[(value, src)]
                best = None
                for engine in p.engines_between(src, dst):
                    dur = p.transfer_ns(value, engine)
                    start = self.lanes[engine].earliest(self._after(source, engine), dur, pending.get(engine, []))
                    if best is None or start + dur < best[5]:
                        best = (value, src, dst, engine, start, start + dur)
                booked.append(best)
                pending.setdefault(best[3], []).append((best[4], best[5]))
                made[(value, dst)] = (best[5], best[3])
        return self.copies.get((value, mem)) or made[(value, mem)]

    def _plan_inputs(self, node: int, device: str) -> tuple[int, list[tuple[int, str, str, str, int, int]]]:
        """Ready time of all inputs in the device's memory, and the transfers (value, src, dst, engine,
        start, end) that would have to be booked for it."""
        home, ready, booked = self.p.home(device), 0, []
        pending: dict[str, list[tuple[int, int]]] = {}
        made: dict[tuple[int, str], tuple[int, str]] = {}
        for value in self.p.node_inputs[node]:
            ready = max(ready, self._after(self._plan_copy(value, home, pending, made, booked), device))
        return ready, booked

    def _origin(self, value: int) -> str:
        producer = self.p.values[value].producer
        return self.p.dram if producer is None else self.p.home(self.placement[producer])

    def trial(self, node: int, device: str) -> int:
        """Finish time of ``node`` on ``device`` if it were committed now."""
        ready, _ = self._plan_inputs(node, device)
        dur = self.p.durations[node][device]
        return self.lanes[device].earliest(ready, dur) + dur

    # ------------------------------------------------------------------ booking
    def commit(self, node: int, device: str) -> int:
        ready, transfers = self._plan_inputs(node, device)
        for value, src, dst, engine, start, end in transfers:
            self._book_transfer(value, dst, engine, start, end)
        dur = self.p.durations[node][device]
        start = self.lanes[device].earliest(ready, dur)
        self.lanes[device].book(start, start + dur, compute_key(node))
        self.placement[node], self.finish[node] = device, start + dur
        for value in self.p.node_outputs[node]:
            self.copies[(value, self.p.home(device))] = (start + dur, device)
            if self.p.values[value].is_output:
                self._copy_to_dram(value)
        return start + dur

    def _book_transfer(self, value: int, dst: str, engine: str, start: int, end: int) -> None:
        self.lanes[engine].book(start, end, transfer_key(value, dst))
        self.copies[(value, dst)] = (end, engine)
        self.dma_choice[(value, dst)] = engine

    def _copy_to_dram(self, value: int) -> None:
        booked: list = []
        self._plan_copy(value, self.p.dram, {}, {}, booked)
        for value, src, dst, engine, start, end in booked:
            self._book_transfer(value, dst, engine, start, end)

    def book_node(self, node: int, device: str, start: int) -> None:
        """Book a decision made elsewhere (CP-SAT); its input copies must be booked already."""
        end = start + self.p.durations[node][device]
        self.lanes[device].book(start, end, compute_key(node))
        self.placement[node], self.finish[node] = device, end
        for value in self.p.node_outputs[node]:
            self.copies[(value, self.p.home(device))] = (end, device)

    def book_transfer(self, value: int, dst: str, engine: str, start: int) -> None:
        self._book_transfer(value, dst, engine, start, start + self.p.transfer_ns(value, engine))

    def clone(self) -> "ListScheduler":
        twin = ListScheduler.__new__(ListScheduler)
        twin.p = self.p
        twin.lanes = {e: Lane(list(l.starts), list(l.ends), list(l.keys)) for e, l in self.lanes.items()}
        twin.placement, twin.finish = list(self.placement), list(self.finish)
        twin.copies, twin.dma_choice = dict(self.copies), dict(self.dma_choice)
        return twin

    def plan(self) -> Plan:
        """The committed decisions (every node must be committed)."""
        assert all(d is not None for d in self.placement), "list scheduling left nodes unplaced"
        orders = {e: list(lane.keys) for e, lane in self.lanes.items() if lane.keys}
        return Plan(tuple(self.placement), dict(self.dma_choice), orders)


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
                key = (spec.producer, c)
                edge_cost[key] = max(edge_cost.get(key, 0.0), mean_lat + spec.nbytes / mean_bw)
    for node in reversed(range(problem.n)):
        durs = problem.durations[node]
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
