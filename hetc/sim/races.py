"""The race detector: two engines touching overlapping bytes at overlapping times, one of them writing.

It runs on the timing trace with a sweep over start times per memory. Each engine executes one instruction at
a time, so at any instant at most one interval per engine is live: the sweep's live set stays small. The
sweep compares each operand's byte hull; where two hulls meet, a strided operand (a region of a tensor) is
checked by its exact byte runs (``Operand.runs``), so tiles writing interleaved rows of one tensor at once are
not a race and a band shifted over another tile's rows is.

A verdict depends only on the instructions and the trace, so ``check_races`` keeps the last few race-free
verdicts: a run of the same program objects (``Program.instructions`` tuples, immutable) whose trace is equal
record for record reuses the verdict instead of sweeping again. A timing-only and a functional run of a
prepared bundle share one trace; a run with other timing parameters (DRAM sharing, another target's
durations) gives another trace and is checked anew. Only race-free verdicts are kept: a race raises every time.
"""
from __future__ import annotations

import threading

from hetc.errors import SimulationError
from hetc.codegen.program import Operand
from hetc.sim.machine import Machine, moves_data, operand_accesses


_RACE_FREE_KEPT = 4
# (the programs' instruction tuples, held so that their ids stay theirs; a copy of the trace's records)
_race_free: list[tuple[tuple, list[tuple[int, int, float, float]]]] = []
_race_free_lock = threading.Lock()


def check_races(machine: Machine, records: list[tuple[int, int, float, float]]) -> None:
    """Raise SimulationError naming both instructions of the earliest race in ``records``."""
    programs = tuple(machine.programs)
    with _race_free_lock:
        for kept_programs, kept_records in _race_free:
            if (len(kept_programs) == len(programs) and all(a is b for a, b in zip(kept_programs, programs))
                    and kept_records == records):
                return
    _sweep(machine, records)
    with _race_free_lock:
        _race_free.insert(0, (programs, list(records)))
        del _race_free[_RACE_FREE_KEPT:]


def forget_race_verdicts() -> None:
    """Drop the kept race-free verdicts (and the programs they hold)."""
    with _race_free_lock:
        _race_free.clear()


def _sweep(machine: Machine, records: list[tuple[int, int, float, float]]) -> None:
    by_memory: dict[str, list[tuple[float, float, int, int, bool, int, int, Operand]]] = {}
    for e, pc, start, end in records:
        ins = machine.programs[e][pc]
        if end <= start or not moves_data(ins):
            continue
        for o, write in operand_accesses(ins):  # type: ignore[arg-type]
            by_memory.setdefault(o.memory, []).append((start, end, o.offset, o.end, write, e, pc, o))
    found: list[tuple[float, str]] = []
    for memory, spans in by_memory.items():
        spans.sort(key=lambda a: a[:7])
        live: list[tuple[float, float, int, int, bool, int, int, Operand]] = []
        for a in spans:
            start, _, lo, hi, write, e, pc, o = a
            live = [b for b in live if b[1] > start]
            for b in live:
                if b[5] != e and b[2] < hi and lo < b[3] and (write or b[4]):
                    shared = _first_shared_byte(o, b[7])
                    if shared is None:
                        continue
                    found.append((start, _message(machine, memory, a, b, shared)))
                    break
            else:
                live.append(a)
                continue
            break
    if found:
        raise SimulationError(min(found)[1])


def _first_shared_byte(a: Operand, b: Operand) -> tuple[int, int] | None:
    """The first byte range two operands whose hulls meet both touch, or None (interleaved strided runs)."""
    if a.dense and b.dense:
        return max(a.offset, b.offset), min(a.end, b.end)
    runs_a, runs_b = a.runs(), b.runs()
    i = j = 0
    while i < len(runs_a) and j < len(runs_b):
        (alo, ahi), (blo, bhi) = runs_a[i], runs_b[j]
        if alo < bhi and blo < ahi:
            return max(alo, blo), min(ahi, bhi)
        if ahi <= bhi:
            i += 1
        else:
            j += 1
    return None


def _message(machine: Machine, memory: str, a: tuple, b: tuple, shared: tuple[int, int]) -> str:
    start, _, lo, hi, write, e, pc, _ = a
    _, _, olo, ohi, owrite, oe, opc, _ = b
    return (f"data race at t={start:.0f} ns in {memory}[0x{shared[0]:x}, 0x{shared[1]:x}): "
            f"{machine.describe(e, pc)} {'writes' if write else 'reads'} while "
            f"{machine.describe(oe, opc)} {'writes' if owrite else 'reads'}; a semaphore "
            "between them is missing or an offset is wrong")
