"""Offline storage allocation: give every ``(start, end_exclusive, size)`` interval an offset so that no two
intervals overlapping in time overlap in address, with the highest address (the peak) as low as possible.

The search, cheapest first, stopping as soon as the peak meets the lower bound (the most bytes live at one
instant, sizes padded to the alignment), which no packing can beat:

1. best-fit decoding (TFLite's greedy-by-size arena planner; ``hetc.memory.bestfit``) of a few deterministic
   orders: by size, by area, by pressure (Vela's), and by start time (optimal for equal sizes and for nested
   lifetimes);
2. hill climbing over the placement order with Arm Vela's move: swap two of the buffers that decided where a
   peak buffer sits (its time-neighbours and the stacks under them), re-decode what moved, keep the move
   unless the peak grows. First Vela's climb itself, from the pressure order with first-fit decoding: where
   the bound is within reach it often gets there in tens of moves, where the same climb with best fit takes
   hundreds, but as often it stalls for hundreds; so it runs in short runs, each with a fresh random stream,
   restarted on Luby's schedule. It gives up at half the budget unless it is within 1% of the bound by then.
   With the rest of the budget, the climb from the best greedy packing with best fit, restarting
   from perturbed orders at each local optimum, which goes further on crowded sets;
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
from operator import add

from hetc.memory.bestfit import (Interval, IntervalProblem, best_greedy, decode, peak_of, pressure_order, ranks,
                                 redecode)
from hetc.schedule.cpsat import safety_net_s

CPSAT_MAX_INTERVALS = 120        # above this CP-SAT's presolve alone outgrows a fraction of a second
DETERMINISTIC_PER_SECOND = 6.0    # wall seconds per CP-SAT deterministic-time unit on these models, measured
DEFAULT_TIME_LIMIT_S = 0.5
STALE_MOVES = 200                 # hill climbing gives up after this many moves without progress
WORK_PER_SECOND = 4_700_000      # hill climbing, idle 2-core machine: median of 3.3-7.8 M/s (tools/packing_rate.py)
# The first-fit climb gives up at this share of the budget unless its peak is within FIRST_FIT_NEAR of the
# bound by then: it is the quick way to a bound in reach, but on crowded sets (dense-2000) and on the planner's
# (Inception v2's NPU scratchpad: 1.15 against the best-fit climb's 1.03) it stalls far above it.
FIRST_FIT_GIVE_UP = 0.5
FIRST_FIT_NEAR = 1.01
FIRST_FIT_RUN = 64                # moves in Luby's unit run of the first-fit climb (docs/benchmarks.md)
STUCK_WIDEN = 50                  # moves without progress before a second, wider swap joins each move


@dataclass(frozen=True)
class PackResult:
    offsets: list[int]          # bytes, multiples of the alignment
    peak: int                   # bytes: max(offset + padded size)
    lower_bound: int            # bytes: max over time of live padded bytes
    method: str                 # which stage produced the packing: "greedy-size", "first-fit-climb",
    #                             "hill-climb", "cp-sat", ...
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
    decide it (its best peak only falls), at a fraction of the work. The first-fit climb runs only with
    ``restarts``: it is the quick way to the bound, not to a packing that fits."""
    if alignment < 1:
        raise ValueError(f"alignment must be >= 1, got {alignment}")
    began = time.perf_counter()
    budget = DEFAULT_TIME_LIMIT_S if time_limit_s is None else max(0.0, time_limit_s)
    safety = began + safety_net_s(budget)   # only a stuck search reaches it: the budgets below decide
    problem = IntervalProblem.build(intervals, alignment)
    bound = problem.lower_bound()
    lower = bound if enough is None else max(bound, enough // alignment)   # the searches stop once there
    greedy_order, greedy_offsets, method = best_greedy(problem)
    best_offsets, best_peak = greedy_offsets, peak_of(problem, greedy_offsets)
    if best_peak > lower and problem.n > 1:
        # leave part of the budget to CP-SAT when it will run: it closes small gaps hill climbing cannot
        share = 0.6 if problem.n <= CPSAT_MAX_INTERVALS else 1.0
        work = int(budget * share * WORK_PER_SECOND)
        spent = 0
        if restarts:   # a search for the lowest peak; one that only needs to fit keeps to the best-fit climb
            offsets, spent = _first_fit_climbs(problem, lower, work, safety)
            if peak_of(problem, offsets) < best_peak:
                best_offsets, best_peak, method = offsets, peak_of(problem, offsets), "first-fit-climb"
        if best_peak > lower and work > spent:
            offsets, _ = _hill_climb(problem, greedy_order, greedy_offsets, lower, work - spent, safety, restarts)
            if peak_of(problem, offsets) < best_peak:
                best_offsets, best_peak, method = offsets, peak_of(problem, offsets), "hill-climb"
    if best_peak > lower and 1 < problem.n <= CPSAT_MAX_INTERVALS:
        offsets = _cpsat(problem, best_offsets, best_peak, lower, max(0.05, budget * 0.4))
        if offsets is not None and peak_of(problem, offsets) < best_peak:
            best_offsets, best_peak, method = offsets, peak_of(problem, offsets), "cp-sat"
    return PackResult(offsets=[o * alignment for o in best_offsets], peak=best_peak * alignment,
                      lower_bound=bound * alignment, method=method,
                      seconds=time.perf_counter() - began)


def lower_bound(intervals: list[Interval], alignment: int = 1) -> int:
    """Max over time of the live bytes (sizes padded to ``alignment``): no packing has a lower peak."""
    return IntervalProblem.build(intervals, alignment).lower_bound() * alignment


def live_profile(intervals: list[Interval], alignment: int = 1) -> tuple[int, int]:
    """(peak live bytes, first time they are reached), sizes padded to ``alignment``."""
    p = IntervalProblem.build(intervals, alignment)
    units, when = p.live_peak()
    return units * alignment, when


def best_fit(intervals: list[Interval], order: list[int], alignment: int = 1) -> list[int]:
    """Offsets from placing the intervals one by one in ``order``, each in the smallest gap that holds it
    (the decoder every search here shares; also a baseline for benchmarks)."""
    p = IntervalProblem.build(intervals, alignment)
    return [o * alignment for o in decode(p, list(order))]


def greedy_by_size(intervals: list[Interval], alignment: int = 1) -> list[int]:
    """TFLite's greedy-by-size arena planner on its own: largest first, best fit."""
    order = sorted(range(len(intervals)), key=lambda i: (-intervals[i][2], intervals[i][0], i))
    return best_fit(intervals, order, alignment)


def packing_violations(intervals: list[Interval], offsets: list[int], alignment: int = 1) -> list[str]:
    """Human-readable problems with a packing (empty when it is valid). Used by tests and ``verify``."""
    problems = []
    if len(offsets) != len(intervals):
        return [f"{len(offsets)} offsets for {len(intervals)} intervals"]
    p = IntervalProblem.build(intervals, alignment)
    for i, off in enumerate(offsets):
        if off < 0 or off % alignment:
            problems.append(f"interval {i}: offset {off} is negative or not a multiple of {alignment}")
    for i in range(p.n):
        for j in p.conflicts[i]:
            if j > i and offsets[i] < offsets[j] + intervals[j][2] and offsets[j] < offsets[i] + intervals[i][2] \
                    and intervals[i][2] > 0 and intervals[j][2] > 0:
                problems.append(f"intervals {i} and {j} overlap in time and address")
    return problems


def _first_fit_climbs(p: IntervalProblem, lower: int, work: int, deadline: float) -> tuple[list[int], int]:
    """Vela's climb (first fit, from the pressure order) to the lowest peak it finds in ``work`` units: runs of
    it, each with a fresh random stream, of ``FIRST_FIT_RUN`` moves times Luby's 1, 1, 2, 1, 1, 2, 4, ... The
    moves one climb needs to reach the bound are heavy-tailed (on uniform-200 sets: a few tens, or stuck for
    hundreds), and restarts cut the tail. Gives up at ``FIRST_FIT_GIVE_UP`` of the work unless the peak is
    within ``FIRST_FIT_NEAR`` of the bound by then. Returns the best packing and the work spent."""
    start = pressure_order(p)
    first = decode(p, start, lowest=True)
    best, best_peak, spent, run = first, peak_of(p, first), 0, 0
    give_up, near = int(work * FIRST_FIT_GIVE_UP), int(lower * FIRST_FIT_NEAR) + 1
    while spent < work and best_peak > lower and not (spent >= give_up and best_peak >= near) \
            and time.perf_counter() <= deadline:   # the clock is only a safety net
        run += 1
        until = work if best_peak < near else give_up
        offsets, used = _hill_climb(p, start, first, lower, until - spent, deadline, restarts=False, lowest=True,
                                    moves=FIRST_FIT_RUN * _luby(run), seed=0x5eed + run - 1)
        spent += max(used, 1)
        peak = peak_of(p, offsets)
        if peak < best_peak:
            best, best_peak = offsets, peak
    return best, spent


def _luby(i: int) -> int:
    """The ``i``-th term (from 1) of Luby's restart sequence: 1, 1, 2, 1, 1, 2, 4, 1, 1, 2, ..."""
    while True:
        k = i.bit_length()
        if i == (1 << k) - 1:
            return 1 << (k - 1)
        i -= (1 << (k - 1)) - 1


def _support(p: IntervalProblem, offsets: list[int], tops: dict[int, list[int]], i: int, into: dict[int, None]) -> None:
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


def _hill_climb(p: IntervalProblem, order: list[int], offsets: list[int], lower: int, budget_work: int,
                deadline: float, restarts: bool = True, lowest: bool = False,
                moves: int | None = None, seed: int = 0x5eed) -> tuple[list[int], int]:
    """Arm Vela's bottleneck search on hetc's incremental decoder. The bottleneck is the buffer reaching the
    peak; the buffers that decided where it sits are its time-neighbours and the stacks under them and under
    it (each buffer rests on a neighbour's top, down to address 0). Two of those swap places in the placement
    order (one not live with the bottleneck, three times in ten: those leave the holes), plus a second swap
    from a wider pool when stuck; the move is kept unless the peak grows. A rejected move stops decoding as
    soon as a buffer passes the peak. ``lowest`` decodes first fit (``offsets`` must be ``order``'s first-fit
    packing). ``moves`` caps the moves tried; ``seed`` seeds the random stream. Budgeted in work units so that
    results are reproducible: returns the best packing and the work spent."""
    rng = random.Random(seed)
    order = list(order)
    pos = ranks(order)
    peak = peak_of(p, offsets)
    best = (order, offsets, peak)
    work = stuck = tried = 0
    while work < budget_work and (moves is None or tried < moves):
        if peak <= lower or time.perf_counter() > deadline:   # the clock is only a safety net
            break
        if stuck >= STALE_MOVES:
            if not restarts:
                break
            # A local optimum: restart from the best order with a random stretch of it shuffled (iterated
            # local search), which the stale moves around one bottleneck could not reach
            order, offsets = _kick(p, best[0], rng, lowest)
            pos = ranks(order)
            peak, stuck = peak_of(p, offsets), 0
            work += p.n + sum(p.place_work)
            continue
        work += 3 * p.n + 20             # five O(n) passes: peak, tops, candidate order and positions, decoder
        stuck += 1
        tried += 1
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
        new_offsets, cost = redecode(p, candidate, offsets, first, seeds, peak, new_pos, lowest)
        work += cost
        if new_offsets is None:
            continue
        new_peak = peak_of(p, new_offsets)
        if new_peak < peak:
            stuck = 0
        order, pos, offsets, peak = candidate, new_pos, new_offsets, new_peak
        if peak < best[2]:
            best = (order, offsets, peak)
    return best[1], work


def _kick(p: IntervalProblem, order: list[int], rng: random.Random, lowest: bool) -> tuple[list[int], list[int]]:
    """``order`` with a random stretch of about a tenth of it shuffled, and its decoding."""
    width = max(2, p.n // 10)
    first = rng.randrange(max(1, p.n - width + 1))
    stretch = order[first:first + width]
    rng.shuffle(stretch)
    kicked = order[:first] + stretch + order[first + width:]
    return kicked, decode(p, kicked, lowest)


def _cpsat(p: IntervalProblem, hint: list[int], upper: int, lower: int, seconds: float) -> list[int] | None:
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
