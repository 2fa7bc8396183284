"""Offline storage allocation: give every ``(start, end_exclusive, size)`` interval an offset so that no two
intervals overlapping in time overlap in address, with the highest address (the peak) as low as possible.

The search, cheapest first, stopping as soon as the peak meets the lower bound (the most bytes live at one
instant, sizes padded to the alignment), which no packing can beat:

1. best-fit decoding (TFLite's greedy-by-size arena planner) of a few deterministic orders: by size, and by
   start time (optimal for equal sizes and for nested lifetimes);
2. hill climbing over the placement order (as TVM's USMP and Arm Vela do): move a buffer that reaches the peak
   earlier in the order, re-decode the suffix, keep the move unless the peak grows;
3. CP-SAT ``AddNoOverlap2D`` over time x address for instances small enough to solve quickly, hinted with the
   best order's packing.

Everything is seeded and budgeted in work units (decodes, CP-SAT deterministic time), so the same input gives
the same offsets; the wall-clock ``time_limit_s`` only cuts a search that runs far over its budget.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

Interval = tuple[int, int, int]   # (start, end_exclusive, size)

CPSAT_MAX_INTERVALS = 250         # above this CP-SAT rarely closes the gap within a fraction of a second
DEFAULT_TIME_LIMIT_S = 0.5


@dataclass(frozen=True)
class PackResult:
    offsets: list[int]          # bytes, multiples of the alignment
    peak: int                   # bytes: max(offset + padded size)
    lower_bound: int            # bytes: max over time of live padded bytes
    method: str                 # which stage produced the packing: "greedy-size", "hill-climb", "cp-sat", ...
    seconds: float


def pack_intervals(intervals: list[Interval], alignment: int = 1,
                   time_limit_s: float | None = None) -> list[int]:
    """Offsets (bytes, multiples of ``alignment``) for ``(start, end_exclusive, size)`` intervals such that
    intervals live at the same time never share an address. An empty interval (``end <= start``) is treated
    as live for one instant, which is always safe."""
    return pack(intervals, alignment, time_limit_s).offsets


def pack(intervals: list[Interval], alignment: int = 1, time_limit_s: float | None = None) -> PackResult:
    """``pack_intervals`` with the peak, the lower bound and the method that won."""
    if alignment < 1:
        raise ValueError(f"alignment must be >= 1, got {alignment}")
    began = time.perf_counter()
    budget = DEFAULT_TIME_LIMIT_S if time_limit_s is None else max(0.0, time_limit_s)
    deadline = began + budget
    problem = _Problem.build(intervals, alignment)
    lower = problem.lower_bound()
    best_order, best_offsets, method = _best_greedy(problem)
    best_peak = _peak(problem, best_offsets)
    if best_peak > lower and problem.n > 1:
        # leave most of the budget to CP-SAT when it will run: it closes small gaps hill climbing cannot
        climb_deadline = began + budget * 0.3 if problem.n <= CPSAT_MAX_INTERVALS else deadline
        order, offsets = _hill_climb(problem, best_order, best_offsets, lower, climb_deadline)
        if _peak(problem, offsets) < best_peak:
            best_offsets, best_peak, method = offsets, _peak(problem, offsets), "hill-climb"
    if best_peak > lower and 1 < problem.n <= CPSAT_MAX_INTERVALS:
        remaining = max(0.05, deadline - time.perf_counter())
        offsets = _cpsat(problem, best_offsets, best_peak, lower, remaining)
        if offsets is not None and _peak(problem, offsets) < best_peak:
            best_offsets, best_peak, method = offsets, _peak(problem, offsets), "cp-sat"
    return PackResult(offsets=[o * alignment for o in best_offsets], peak=best_peak * alignment,
                      lower_bound=lower * alignment, method=method, seconds=time.perf_counter() - began)


def lower_bound(intervals: list[Interval], alignment: int = 1) -> int:
    """Max over time of the live bytes (sizes padded to ``alignment``): no packing has a lower peak."""
    return _Problem.build(intervals, alignment).lower_bound() * alignment


def live_profile(intervals: list[Interval], alignment: int = 1) -> tuple[int, int]:
    """(peak live bytes, first time they are reached), sizes padded to ``alignment``."""
    p = _Problem.build(intervals, alignment)
    units, when = p.live_peak()
    return units * alignment, when


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
    conflicts: list[list[int]]  # indices overlapping in time

    @property
    def n(self) -> int:
        return len(self.sizes)

    @classmethod
    def build(cls, intervals: list[Interval], alignment: int) -> "_Problem":
        starts, ends, sizes = [], [], []
        for start, end, size in intervals:
            if size < 0:
                raise ValueError(f"interval ({start}, {end}, {size}) has a negative size")
            starts.append(start)
            ends.append(max(end, start + 1))
            sizes.append(-(-size // alignment))
        return cls(starts, ends, sizes, _conflicts(starts, ends, sizes))

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


def _conflicts(starts: list[int], ends: list[int], sizes: list[int]) -> list[list[int]]:
    """For each interval, the others it overlaps in time (sweep over start order; zero sizes conflict with
    nothing since they occupy no address)."""
    n = len(starts)
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


def _place(p: _Problem, i: int, offsets: list[int], before: list[int], rank: int) -> int:
    """Best fit: the smallest gap between the time-neighbours placed before ``i`` (``before[j] < rank``)
    that holds interval ``i``, else the top of them."""
    size = p.sizes[i]
    if size == 0:
        return 0
    taken = sorted((offsets[j], offsets[j] + p.sizes[j]) for j in p.conflicts[i] if before[j] < rank)
    best_off, best_waste = -1, -1
    cursor = 0
    for lo, hi in taken:
        gap = lo - cursor
        if gap >= size and (best_waste < 0 or gap - size < best_waste):
            best_off, best_waste = cursor, gap - size
            if best_waste == 0:
                break
        cursor = max(cursor, hi)
    return best_off if best_off >= 0 else cursor


def _positions(order: list[int]) -> list[int]:
    pos = [0] * len(order)
    for k, i in enumerate(order):
        pos[i] = k
    return pos


def _decode(p: _Problem, order: list[int]) -> list[int]:
    """Place intervals one by one in ``order`` with best fit."""
    out = [0] * p.n
    pos = _positions(order)
    for k, i in enumerate(order):
        out[i] = _place(p, i, out, pos, k)
    return out


def _redecode(p: _Problem, order: list[int], offsets: list[int], from_pos: int, seeds: set[int]) -> list[int]:
    """Re-decode after an order change at ``from_pos``: only intervals in ``seeds`` and those whose
    time-neighbours moved are re-placed (a placement depends on nothing else), so a move costs its cascade."""
    out = list(offsets)
    pos = _positions(order)
    dirty = set(seeds)
    for k in range(from_pos, p.n):
        i = order[k]
        if i not in dirty:
            continue
        new = _place(p, i, out, pos, k)
        if new != out[i]:
            out[i] = new
            dirty.update(p.conflicts[i])
    return out


def _best_greedy(p: _Problem) -> tuple[list[int], list[int], str]:
    idx = range(p.n)
    orders = {
        "greedy-size": sorted(idx, key=lambda i: (-p.sizes[i], p.starts[i], -p.ends[i], i)),
        "greedy-start": sorted(idx, key=lambda i: (p.starts[i], -p.ends[i], -p.sizes[i], i)),
        "greedy-area": sorted(idx, key=lambda i: (-p.sizes[i] * (p.ends[i] - p.starts[i]), p.starts[i], i)),
    }
    best: tuple[list[int], list[int], str] | None = None
    for name, order in orders.items():
        offsets = _decode(p, order)
        if best is None or _peak(p, offsets) < _peak(p, best[1]):
            best = (order, offsets, name)
    assert best is not None
    return best


def _hill_climb(p: _Problem, order: list[int], offsets: list[int], lower: int,
                deadline: float) -> tuple[list[int], list[int]]:
    """Move a buffer that reaches the peak to an earlier place in the order; keep moves that do not raise
    the peak (plateau moves let the search drift). Budgeted in decodes so that results are reproducible."""
    rng = random.Random(0x5eed)
    order = list(order)
    peak = _peak(p, offsets)
    max_moves = 2000
    for _ in range(max_moves):
        if peak <= lower or time.perf_counter() > deadline:
            break
        top = [i for i in range(p.n) if offsets[i] + p.sizes[i] == peak]
        victim = top[rng.randrange(len(top))]
        pos = order.index(victim)
        if pos == 0:
            continue
        target = rng.randrange(pos)
        candidate = order[:target] + [victim] + order[target:pos] + order[pos + 1:]
        new_offsets = _redecode(p, candidate, offsets, target, {victim, *p.conflicts[victim]})
        new_peak = _peak(p, new_offsets)
        new_crowd = sum(1 for i in range(p.n) if new_offsets[i] + p.sizes[i] == new_peak)
        # fewer intervals touching the peak is progress too: it is how the peak eventually drops
        if (new_peak, new_crowd) <= (peak, len(top)):
            order, offsets, peak = candidate, new_offsets, new_peak
    return order, offsets


def _cpsat(p: _Problem, hint: list[int], upper: int, lower: int, seconds: float) -> list[int] | None:
    """Exact packing on compressed time; returns None when CP-SAT finds nothing better than ``upper``."""
    from ortools.sat.python import cp_model

    times = sorted(set(p.starts) | set(p.ends))
    tick = {t: k for k, t in enumerate(times)}
    model = cp_model.CpModel()
    peak = model.NewIntVar(lower, upper - 1, "peak")
    xs, ys, offs = [], [], []
    for i in range(p.n):
        s, e, size = tick[p.starts[i]], tick[p.ends[i]], p.sizes[i]
        off = model.NewIntVar(0, max(0, upper - 1 - size), f"off{i}")
        model.Add(off + size <= peak)
        xs.append(model.NewFixedSizeIntervalVar(s, e - s, f"t{i}"))
        ys.append(model.NewFixedSizeIntervalVar(off, size, f"a{i}"))
        model.AddHint(off, hint[i])
        offs.append(off)
    model.AddNoOverlap2D(xs, ys)
    model.Minimize(peak)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1          # single worker + fixed seed: reproducible
    solver.parameters.random_seed = 7
    solver.parameters.max_deterministic_time = max(0.05, seconds)
    solver.parameters.max_time_in_seconds = max(0.1, 4 * seconds)  # safety net only
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return [solver.Value(o) for o in offs]
