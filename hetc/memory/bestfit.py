"""The interval-packing problem and its best-fit decoder, which every search of ``hetc.memory.packing`` shares.

``IntervalProblem`` holds the intervals (sizes in alignment units), each one's time-neighbours and the work a
placement of it costs (the unit the searches' budgets are counted in); ``Decoder`` places intervals one by one
in an order, each in the smallest gap between the neighbours placed before it (best fit: TFLite's
greedy-by-size arena planner's rule) or, with ``lowest``, in the lowest gap that holds it (first fit: Arm
Vela's), and ``redecode`` re-places only what an order change reaches.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

Interval = tuple[int, int, int]   # (start, end_exclusive, size)

START_ORDER_MAX = 500             # the start-order greedy is tried up to this many intervals
_MATRIX_MAX = 4000                # overlap matrix up to this many intervals (16 MB of booleans)
_NUMPY_DEGREE = 40                # above this many time-neighbours numpy scans faster than a Python loop
_VECTOR_CALL_WORK = 50            # a vectorised best-fit costs this many neighbour visits, plus a seventh of
_VECTOR_VISIT_DIVISOR = 7         # its neighbours: measured against the Python loop (2026-12-04, idle)


@dataclass
class IntervalProblem:
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
        """Work units of one best-fit placement of each interval (see ``Decoder.place``)."""
        return [_VECTOR_CALL_WORK + len(c) // _VECTOR_VISIT_DIVISOR if len(c) > _NUMPY_DEGREE else len(c) + 1
                for c in self.conflicts]

    @cached_property
    def arrays(self) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Sizes, and the conflict lists long enough to be worth scanning with numpy."""
        return (np.array(self.sizes, dtype=np.int64),
                [np.array(c, dtype=np.int64) if len(c) > _NUMPY_DEGREE else None for c in self.conflicts])

    @classmethod
    def build(cls, intervals: list[Interval], alignment: int) -> "IntervalProblem":
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


def peak_of(p: IntervalProblem, offsets: list[int]) -> int:
    return max((o + s for o, s in zip(offsets, p.sizes)), default=0)


class Decoder:
    """Placement state: offsets so far and each interval's rank in the placement order; ``lowest`` places
    first fit instead of best fit."""

    def __init__(self, p: IntervalProblem, order: list[int], offsets: list[int] | None = None,
                 positions: list[int] | None = None, lowest: bool = False) -> None:
        self.p = p
        self.lowest = lowest
        self.out = list(offsets) if offsets is not None else [0] * p.n
        self.pos = positions if positions is not None else ranks(order)
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
        that holds interval ``i``, else the top of them; first fit (``lowest``): the lowest such gap."""
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
                return int(cursor[fits[0] if self.lowest else fits[np.argmin(waste[fits])]])
            return int(hi[-1])
        out, pos, lowest = self.out, self.pos, self.lowest
        taken = [(out[j], s) for j, s in p.sized_conflicts[i] if pos[j] < rank]
        taken.sort()
        best_off, best_waste = -1, -1
        cursor = 0
        for lo, s in taken:
            waste = lo - cursor - size
            if waste >= 0 and (best_waste < 0 or waste < best_waste):
                best_off, best_waste = cursor, waste
                if waste == 0 or lowest:
                    break
            if lo + s > cursor:
                cursor = lo + s
        return best_off if best_off >= 0 else cursor


def decode(p: IntervalProblem, order: list[int], lowest: bool = False) -> list[int]:
    """Place intervals one by one in ``order`` with best fit, or first fit with ``lowest``."""
    d = Decoder(p, order, lowest=lowest)
    for k, i in enumerate(order):
        d.set(i, d.place(i, k))
    return d.out


def redecode(p: IntervalProblem, order: list[int], offsets: list[int], from_pos: int,
              seeds: set[int], limit: int | None = None, positions: list[int] | None = None,
              lowest: bool = False) -> tuple[list[int] | None, int]:
    """Re-decode after an order change at ``from_pos``: only intervals in ``seeds`` and those whose
    time-neighbours moved are re-placed (a placement depends on nothing else), so a move costs its cascade.
    Also returns the work done (``place_work`` summed), the unit the search budget is counted in."""
    d = Decoder(p, order, offsets, positions, lowest)
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


def best_greedy(p: IntervalProblem) -> tuple[list[int], list[int], str]:
    """The best of a few best-fit orders. By start time is exact on nested lifetimes (and, like by size, on
    equal sizes); large instances, where it rarely wins, skip it to save a decode."""
    idx = range(p.n)
    orders = {
        "greedy-size": sorted(idx, key=lambda i: (-p.sizes[i], p.starts[i], -p.ends[i], i)),
        "greedy-area": sorted(idx, key=lambda i: (-p.sizes[i] * (p.ends[i] - p.starts[i]), p.starts[i], i)),
    }
    orders["greedy-pressure"] = pressure_order(p)
    if p.n <= START_ORDER_MAX:
        orders["greedy-start"] = sorted(idx, key=lambda i: (p.starts[i], -p.ends[i], -p.sizes[i], i))
    best: tuple[list[int], list[int], str] | None = None
    for name, order in orders.items():
        offsets = decode(p, order)
        if best is None or peak_of(p, offsets) < peak_of(p, best[1]):
            best = (order, offsets, name)
    assert best is not None
    return best


def pressure_order(p: IntervalProblem) -> list[int]:
    """Vela's initial order: most pressure first (``IntervalProblem.pressure``), then longest-lived, earliest,
    largest."""
    pressure = p.pressure()
    return sorted(range(p.n), key=lambda i: (-pressure[i], p.starts[i] - p.ends[i], p.starts[i], -p.sizes[i], i))


def ranks(order: list[int]) -> list[int]:
    """Each interval's rank in ``order``."""
    pos = [0] * len(order)
    for k, i in enumerate(order):
        pos[i] = k
    return pos
