"""Offline storage allocation: give every ``(start, end_exclusive, size)`` interval an offset so that no two
intervals overlapping in time overlap in address, with the highest address (the peak) as low as possible.

The search, cheapest first, stopping as soon as the peak meets the lower bound (the most bytes live at one
instant, sizes padded to the alignment), which no packing can beat:

1. best-fit decoding (TFLite's greedy-by-size arena planner) of a few deterministic orders: by size, and by
   start time (optimal for equal sizes and for nested lifetimes);
2. hill climbing over the placement order with Arm Vela's move: swap two of the buffers that decided where a
   peak buffer sits (its time-neighbours and the stacks under them), re-decode what moved, keep the move
   unless the peak grows;
3. CP-SAT ``AddNoOverlap2D`` over time x address for instances small enough to solve quickly, hinted with the
   best order's packing.

Everything is seeded and budgeted in work units (decodes, CP-SAT deterministic time), so the same input gives
the same offsets on any machine; ``time_limit_s`` is converted into those units, and the wall clock only cuts a
search that runs far over its budget.
"""
from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from operator import add

import numpy as np

from hetc.schedule.cpsat import safety_net_s

Interval = tuple[int, int, int]   # (start, end_exclusive, size)

CPSAT_MAX_INTERVALS = 120        # above this CP-SAT's presolve alone outgrows a fraction of a second
DETERMINISTIC_PER_SECOND = 6.0    # wall seconds per CP-SAT deterministic-time unit on these models, measured
DEFAULT_TIME_LIMIT_S = 0.5
STALE_MOVES = 200                 # hill climbing gives up after this many moves without progress
START_ORDER_MAX = 500             # the start-order greedy is tried up to this many intervals
_MATRIX_MAX = 4000                # overlap matrix up to this many intervals (16 MB of booleans)
_NUMPY_DEGREE = 40                # above this many time-neighbours numpy scans faster than a Python loop
WORK_PER_SECOND = 4_700_000      # hill climbing, idle 2-core machine: median of 3.3-7.8 M/s (tools/packing_rate.py)
STUCK_WIDEN = 50                  # moves without progress before a second, wider swap joins each move
_VECTOR_CALL_WORK = 50            # a vectorised best-fit costs this many neighbour visits, plus a seventh of
_VECTOR_VISIT_DIVISOR = 7         # its neighbours: measured against the Python loop (2026-12-04, idle)


@dataclass(frozen=True)
class PackResult:
    offsets: list[int]          # bytes, multiples of the alignment
    peak: int                   # bytes: max(offset + padded size)
    lower_bound: int            # bytes: max over time of live padded bytes
    method: str                 # which stage produced the packing: "greedy-size", "hill-climb", "cp-sat", ...
    seconds: float


def pack_intervals(intervals: list[Interval], alignment: int = 1,
                   time_limit_s: float | None = None, restarts: bool = True) -> list[int]:
    """Offsets (bytes, multiples of ``alignment``) for ``(start, end_exclusive, size)`` intervals such that
    intervals live at the same time never share an address. An empty interval (``end <= start``) is treated
    as live for one instant, which is always safe."""
    return pack(intervals, alignment, time_limit_s, restarts).offsets


def pack(intervals: list[Interval], alignment: int = 1, time_limit_s: float | None = None,
         restarts: bool = True, enough: int | None = None) -> PackResult:
    """``pack_intervals`` with the peak, the lower bound and the method that won. Without ``restarts`` the
    hill climb stops at its first local optimum (``STALE_MOVES`` moves without progress), often well inside
    the budget: for packings that only need to fit. With ``enough`` (bytes), the search also stops as soon as
    the peak is at most that: whether a memory's packing fits is then decided as the full search would
    decide it (its best peak only falls), at a fraction of the work."""
    if alignment < 1:
        raise ValueError(f"alignment must be >= 1, got {alignment}")
    began = time.perf_counter()
    budget = DEFAULT_TIME_LIMIT_S if time_limit_s is None else max(0.0, time_limit_s)
    safety = began + safety_net_s(budget)   # only a stuck search reaches it: the budgets below decide
    problem = _Problem.build(intervals, alignment)
    bound = problem.lower_bound()
    lower = bound if enough is None else max(bound, enough // alignment)   # the searches stop once there
    best_order, best_offsets, method = _best_greedy(problem)
    best_peak = _peak(problem, best_offsets)
    if best_peak > lower and problem.n > 1:
        # leave part of the budget to CP-SAT when it will run: it closes small gaps hill climbing cannot
        share = 0.6 if problem.n <= CPSAT_MAX_INTERVALS else 1.0
        order, offsets = _hill_climb(problem, best_order, best_offsets, lower,
                                     int(budget * share * WORK_PER_SECOND), safety, restarts)
        if _peak(problem, offsets) < best_peak:
            best_offsets, best_peak, method = offsets, _peak(problem, offsets), "hill-climb"
    if best_peak > lower and 1 < problem.n <= CPSAT_MAX_INTERVALS:
        offsets = _cpsat(problem, best_offsets, best_peak, lower, max(0.05, budget * 0.4))
        if offsets is not None and _peak(problem, offsets) < best_peak:
            best_offsets, best_peak, method = offsets, _peak(problem, offsets), "cp-sat"
    return PackResult(offsets=[o * alignment for o in best_offsets], peak=best_peak * alignment,
                      lower_bound=bound * alignment, method=method,
                      seconds=time.perf_counter() - began)


def lower_bound(intervals: list[Interval], alignment: int = 1) -> int:
    """Max over time of the live bytes (sizes padded to ``alignment``): no packing has a lower peak."""
    return _Problem.build(intervals, alignment).lower_bound() * alignment


def live_profile(intervals: list[Interval], alignment: int = 1) -> tuple[int, int]:
    """(peak live bytes, first time they are reached), sizes padded to ``alignment``."""
    p = _Problem.build(intervals, alignment)
    units, when = p.live_peak()
    return units * alignment, when


def best_fit(intervals: list[Interval], order: list[int], alignment: int = 1) -> list[int]:
    """Offsets from placing the intervals one by one in ``order``, each in the smallest gap that holds it
    (the decoder every search here shares; also a baseline for benchmarks)."""
    p = _Problem.build(intervals, alignment)
    return [o * alignment for o in _decode(p, list(order))]


def greedy_by_size(intervals: list[Interval], alignment: int = 1) -> list[int]:
    """TFLite's greedy-by-size arena planner on its own: largest first, best fit."""
    order = sorted(range(len(intervals)), key=lambda i: (-intervals[i][2], intervals[i][0], i))
    return best_fit(intervals, order, alignment)


def packing_violations(intervals: list[Interval], offsets: list[int], alignment: int = 1) -> list[str]:
    """Human-readable problems with a packing (empty when it is valid). Used by tests and ``verify``."""
    problems = []
    if len(offsets) != len(intervals):
        return [f"{len(offsets)} offsets for {len(intervals)} intervals"]
    p = _Problem.build(intervals, alignment)
    for i, off in enumerate(offsets):
        if off < 0 or off % alignment:
            problems.append(f"interval {i}: offset {off} is negative or not a multiple of {alignment}")
    for i in range(p.n):
        for j in p.conflicts[i]:
            if j > i and offsets[i] < offsets[j] + intervals[j][2] and offsets[j] < offsets[i] + intervals[i][2] \
                    and intervals[i][2] > 0 and intervals[j][2] > 0:
                problems.append(f"intervals {i} and {j} overlap in time and address")
    return problems


# ---------------------------------------------------------------------------------------------- internals
@dataclass
class _Problem:
    starts: list[int]
    ends: list[int]
    sizes: list[int]            # in alignment units

    @property
    def n(self) -> int:
        return len(self.sizes)

    @cached_property
    def conflicts(self) -> list[list[int]]:
        """Indices overlapping in time, per interval."""
        return _conflicts(self.starts, self.ends, self.sizes)

    @cached_property
    def sized_conflicts(self) -> list[list[tuple[int, int]]]:
        """``conflicts`` with each neighbour's size: the pairs best fit walks."""
        sizes = self.sizes
        return [[(j, sizes[j]) for j in c] for c in self.conflicts]

    @cached_property
    def place_work(self) -> list[int]:
        """Work units of one best-fit placement of each interval (see ``_Decoder.place``)."""
        return [_VECTOR_CALL_WORK + len(c) // _VECTOR_VISIT_DIVISOR if len(c) > _NUMPY_DEGREE else len(c) + 1
                for c in self.conflicts]

    @cached_property
    def arrays(self) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Sizes, and the conflict lists long enough to be worth scanning with numpy."""
        return (np.array(self.sizes, dtype=np.int64),
                [np.array(c, dtype=np.int64) if len(c) > _NUMPY_DEGREE else None for c in self.conflicts])

    @classmethod
    def build(cls, intervals: list[Interval], alignment: int) -> "_Problem":
        starts, ends, sizes = [], [], []
        for start, end, size in intervals:
            if size < 0:
                raise ValueError(f"interval ({start}, {end}, {size}) has a negative size")
            starts.append(start)
            ends.append(max(end, start + 1))
            sizes.append(-(-size // alignment))
        return cls(starts, ends, sizes)

    def live_peak(self) -> tuple[int, int]:
        events = sorted([(e, -s) for s, e, in zip(self.sizes, self.ends)] +
                        [(st, s) for s, st in zip(self.sizes, self.starts)])
        live = best = best_t = 0
        for t, delta in events:          # ends (negative deltas) sort before starts at the same time
            live += delta
            if live > best:
                best, best_t = live, t
        return best, best_t

    def lower_bound(self) -> int:
        return self.live_peak()[0]

    def pressure(self) -> list[int]:
        """Per interval, the most units live at one instant of its lifetime: those where the peak is decided
        come first in Vela's initial order (its "urgency"), longest-lived first among equals."""
        if not self.n:
            return []
        starts, ends = np.array(self.starts), np.array(self.ends)
        sizes = np.array(self.sizes, dtype=np.int64)
        instants = np.unique(starts)          # live bytes only grow at a start: the maximum is at one
        by_start, by_end = np.argsort(starts, kind="stable"), np.argsort(ends, kind="stable")
        begun = np.concatenate(([0], np.cumsum(sizes[by_start])))[np.searchsorted(starts[by_start], instants,
                                                                                  side="right")]
        ended = np.concatenate(([0], np.cumsum(sizes[by_end])))[np.searchsorted(ends[by_end], instants,
                                                                                side="right")]
        live = np.append(begun - ended, 0)    # a sentinel: reduceat's indices must stay inside the array
        lo = np.searchsorted(instants, starts)
        hi = np.searchsorted(instants, ends)  # > lo: an interval's own start lies in [start, end)
        return np.maximum.reduceat(live, np.column_stack((lo, hi)).ravel())[::2].tolist()


def _conflicts(starts: list[int], ends: list[int], sizes: list[int]) -> list[list[int]]:
    """For each interval, the others it overlaps in time (zero sizes conflict with nothing since they occupy
    no address). An overlap matrix in numpy up to a few thousand intervals, a sweep over start order beyond."""
    n = len(starts)
    if n <= _MATRIX_MAX:
        s, e = np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
        overlap = (s[:, None] < e[None, :]) & (s[None, :] < e[:, None])
        used = np.array(sizes, dtype=np.int64) > 0
        overlap &= used[:, None] & used[None, :]
        np.fill_diagonal(overlap, False)
        return [np.flatnonzero(row).tolist() for row in overlap]
    conflicts: list[list[int]] = [[] for _ in range(n)]
    order = sorted((i for i in range(n) if sizes[i] > 0), key=lambda i: starts[i])
    active: list[int] = []
    for i in order:
        active = [j for j in active if ends[j] > starts[i]]
        for j in active:
            conflicts[i].append(j)
            conflicts[j].append(i)
        active.append(i)
    return conflicts


def _peak(p: _Problem, offsets: list[int]) -> int:
    return max((o + s for o, s in zip(offsets, p.sizes)), default=0)


class _Decoder:
    """Best-fit placement state: offsets so far and each interval's rank in the placement order."""

    def __init__(self, p: _Problem, order: list[int], offsets: list[int] | None = None,
                 positions: list[int] | None = None) -> None:
        self.p = p
        self.out = list(offsets) if offsets is not None else [0] * p.n
        self.pos = positions if positions is not None else _positions(order)
        self._np: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def out_np(self) -> np.ndarray:
        return self._arrays()[0]

    @property
    def pos_np(self) -> np.ndarray:
        return self._arrays()[1]

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and ranks as arrays, made at the first vectorised placement (small problems need none)."""
        if self._np is None:
            self._np = (np.array(self.out, dtype=np.int64), np.array(self.pos, dtype=np.int64))
        return self._np

    def set(self, i: int, offset: int) -> None:
        self.out[i] = offset
        if self._np is not None:
            self._np[0][i] = offset

    def place(self, i: int, rank: int) -> int:
        """Best fit: the smallest gap between the time-neighbours placed before ``i`` (rank below ``rank``)
        that holds interval ``i``, else the top of them."""
        p = self.p
        size = p.sizes[i]
        if size == 0:
            return 0
        sizes_np, conflicts_np = p.arrays
        if conflicts_np[i] is not None:            # same rule, vectorised for crowded intervals
            nb = conflicts_np[i]
            nb = nb[self.pos_np[nb] < rank]
            if nb.size == 0:
                return 0
            lo = self.out_np[nb]
            order = np.argsort(lo, kind="stable")
            lo = lo[order]
            hi = np.maximum.accumulate(lo + sizes_np[nb][order])
            cursor = np.concatenate(([0], hi[:-1]))
            waste = lo - cursor - size
            fits = np.flatnonzero(waste >= 0)
            if fits.size:
                return int(cursor[fits[np.argmin(waste[fits])]])
            return int(hi[-1])
        out, pos = self.out, self.pos
        taken = [(out[j], s) for j, s in p.sized_conflicts[i] if pos[j] < rank]
        taken.sort()
        best_off, best_waste = -1, -1
        cursor = 0
        for lo, s in taken:
            waste = lo - cursor - size
            if waste >= 0 and (best_waste < 0 or waste < best_waste):
                best_off, best_waste = cursor, waste
                if waste == 0:
                    break
            if lo + s > cursor:
                cursor = lo + s
        return best_off if best_off >= 0 else cursor


def _decode(p: _Problem, order: list[int]) -> list[int]:
    """Place intervals one by one in ``order`` with best fit."""
    d = _Decoder(p, order)
    for k, i in enumerate(order):
        d.set(i, d.place(i, k))
    return d.out


def _redecode(p: _Problem, order: list[int], offsets: list[int], from_pos: int,
              seeds: set[int], limit: int | None = None,
              positions: list[int] | None = None) -> tuple[list[int] | None, int]:
    """Re-decode after an order change at ``from_pos``: only intervals in ``seeds`` and those whose
    time-neighbours moved are re-placed (a placement depends on nothing else), so a move costs its cascade.
    Also returns the work done (``place_work`` summed), the unit the search budget is counted in."""
    d = _Decoder(p, order, offsets, positions)
    dirty = set(seeds)
    work = 0
    for k in range(from_pos, p.n):
        i = order[k]
        if i not in dirty:
            continue
        new = d.place(i, k)
        work += p.place_work[i]
        if new != d.out[i]:
            if limit is not None and new + p.sizes[i] > limit:
                return None, work          # already worse than the limit: no need to finish (as Vela does)
            d.set(i, new)
            dirty.update(p.conflicts[i])
    return d.out, work


def _best_greedy(p: _Problem) -> tuple[list[int], list[int], str]:
    """The best of a few best-fit orders. By start time is exact on nested lifetimes (and, like by size, on
    equal sizes); large instances, where it rarely wins, skip it to save a decode."""
    idx = range(p.n)
    orders = {
        "greedy-size": sorted(idx, key=lambda i: (-p.sizes[i], p.starts[i], -p.ends[i], i)),
        "greedy-area": sorted(idx, key=lambda i: (-p.sizes[i] * (p.ends[i] - p.starts[i]), p.starts[i], i)),
    }
    pressure = p.pressure()
    orders["greedy-pressure"] = sorted(idx, key=lambda i: (-pressure[i], p.starts[i] - p.ends[i], p.starts[i],
                                                         -p.sizes[i], i))
    if p.n <= START_ORDER_MAX:
        orders["greedy-start"] = sorted(idx, key=lambda i: (p.starts[i], -p.ends[i], -p.sizes[i], i))
    best: tuple[list[int], list[int], str] | None = None
    for name, order in orders.items():
        offsets = _decode(p, order)
        if best is None or _peak(p, offsets) < _peak(p, best[1]):
            best = (order, offsets, name)
    assert best is not None
    return best


def _support(p: _Problem, offsets: list[int], tops: dict[int, list[int]], i: int, into: dict[int, None]) -> None:
    """Add ``i`` and the stack under it to ``into``: a time-neighbour whose top is ``i``'s offset, then one
    under that, down to address 0 (Vela's predecessor chain: the buffers that decided where ``i`` sits).
    ``tops`` maps each top address to the buffers ending there; a chain stops where it meets one already in."""
    starts, ends = p.starts, p.ends
    while i not in into:
        into[i] = None
        off = offsets[i]
        below = [j for j in tops.get(off, ()) if starts[j] < ends[i] and starts[i] < ends[j]] if off else ()
        if not below:
            return
        i = below[0]


def _hill_climb(p: _Problem, order: list[int], offsets: list[int], lower: int,
                budget_work: int, deadline: float, restarts: bool = True) -> tuple[list[int], list[int]]:
    """Arm Vela's bottleneck search on hetc's incremental decoder. The bottleneck is the buffer reaching the
    peak; the buffers that decided where it sits are its time-neighbours and the stacks under them and under
    it (each buffer rests on a neighbour's top, down to address 0). Two of those swap places in the placement
    order (one not live with the bottleneck, three times in ten: those leave the holes), plus a second swap
    from a wider pool when stuck; the move is kept unless the peak grows. A rejected move stops decoding as
    soon as a buffer passes the peak. Budgeted in work units so that results are reproducible."""
    rng = random.Random(0x5eed)
    order = list(order)
    pos = _positions(order)
    peak = _peak(p, offsets)
    best = (order, offsets, peak)
    work = stuck = 0
    while work < budget_work:
        if peak <= lower or time.perf_counter() > deadline:   # the clock is only a safety net
            break
        if stuck >= STALE_MOVES:
            if not restarts:
                break
            # A local optimum: restart from the best order with a random stretch of it shuffled (iterated
            # local search), which the stale moves around one bottleneck could not reach
            order, offsets = _kick(p, best[0], rng)
            pos = _positions(order)
            peak, stuck = _peak(p, offsets), 0
            work += p.n + sum(p.place_work)
            continue
        work += 3 * p.n + 20             # five O(n) passes: peak, tops, candidate order and positions, decoder
        stuck += 1
        tops: dict[int, list[int]] = defaultdict(list)
        for i, end in enumerate(map(add, offsets, p.sizes)):
            tops[end].append(i)
        top = tops[peak]
        victim = top[rng.randrange(len(top))]
        support: dict[int, None] = {}
        _support(p, offsets, tops, victim, support)
        for j in p.conflicts[victim]:
            _support(p, offsets, tops, j, support)
        pool = list(support)
        work += p.n + 4 * len(pool)
        if len(pool) < 2:
            continue
        live = set(p.conflicts[victim])
        holes = [i for i in pool if i != victim and i not in live]
        x = holes[rng.randrange(len(holes))] if holes and rng.random() < 0.3 else pool[rng.randrange(len(pool))]
        y = pool[rng.randrange(len(pool))]
        if x == y:
            continue
        swaps = [(x, y)]
        if stuck > STUCK_WIDEN:
            wide = dict(support)
            for h in holes:
                wide.update(dict.fromkeys(p.conflicts[h]))
            wide_pool = list(wide)
            swaps.append((wide_pool[rng.randrange(len(wide_pool))], wide_pool[rng.randrange(len(wide_pool))]))
        candidate = list(order)
        new_pos = list(pos)
        seeds: set[int] = set()
        for u, v in swaps:
            a, b = new_pos[u], new_pos[v]
            candidate[a], candidate[b] = v, u
            new_pos[u], new_pos[v] = b, a
            seeds.update((u, v), p.conflicts[u], p.conflicts[v])
        first = min(min(pos[u], pos[v]) for u, v in swaps)
        new_offsets, cost = _redecode(p, candidate, offsets, first, seeds, peak, new_pos)
        work += cost
        if new_offsets is None:
            continue
        new_peak = _peak(p, new_offsets)
        if new_peak < peak:
            stuck = 0
        order, pos, offsets, peak = candidate, new_pos, new_offsets, new_peak
        if peak < best[2]:
            best = (order, offsets, peak)
    return best[0], best[1]


def _positions(order: list[int]) -> list[int]:
    """Each interval's rank in ``order``."""
    pos = [0] * len(order)
    for k, i in enumerate(order):
        pos[i] = k
    return pos


def _kick(p: _Problem, order: list[int], rng: random.Random) -> tuple[list[int], list[int]]:
    """``order`` with a random stretch of about a tenth of it shuffled, and its decoding."""
    width = max(2, p.n // 10)
    first = rng.randrange(max(1, p.n - width + 1))
    stretch = order[first:first + width]
    rng.shuffle(stretch)
    kicked = order[:first] + stretch + order[first + width:]
    return kicked, _decode(p, kicked)


def _cpsat(p: _Problem, hint: list[int], upper: int, lower: int, seconds: float) -> list[int] | None:
    """Exact packing; returns None when CP-SAT finds nothing better than ``upper``.

    Lifetimes are fixed, so time x address non-overlap (``AddNoOverlap2D``) reduces to one ``AddNoOverlap``
    over addresses per maximal set of intervals live at once: in an interval graph two intervals overlap iff
    both are live at the later one's start, so the sets live at each start are the maximal cliques. This
    presolves several times faster than the 2-D constraint on the same instances."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    peak = model.NewIntVar(lower, upper - 1, "peak")
    boxes, offs = [], []
    for i in range(p.n):
        size = p.sizes[i]
        off = model.NewIntVar(0, max(0, upper - 1 - size), f"off{i}")
        model.Add(off + size <= peak)
        boxes.append(model.NewFixedSizeIntervalVar(off, size, f"a{i}"))
        model.AddHint(off, hint[i])
        offs.append(off)
    seen: set[frozenset[int]] = set()
    for i in range(p.n):
        clique = frozenset([i, *(j for j in p.conflicts[i] if p.starts[j] <= p.starts[i])])
        if len(clique) > 1 and clique not in seen:
            seen.add(clique)
            model.AddNoOverlap([boxes[j] for j in sorted(clique)])
    model.Minimize(peak)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1          # single worker + fixed seed: reproducible
    solver.parameters.random_seed = 7
    solver.parameters.max_deterministic_time = max(0.02, seconds / DETERMINISTIC_PER_SECOND)
    solver.parameters.max_time_in_seconds = safety_net_s(seconds)      # safety net only
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return [solver.Value(o) for o in offs]
