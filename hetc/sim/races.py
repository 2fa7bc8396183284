"""The race detector: two engines touching overlapping bytes at overlapping times, one of them writing.

It runs on the timing trace with a sweep over start times per memory. Each engine executes one instruction at
a time, so at any instant at most one interval per engine is live: the sweep's live set stays small.
"""
from __future__ import annotations

from hetc.errors import SimulationError
from hetc.sim.machine import Machine, accesses, moves_data


def check_races(machine: Machine, records: list[tuple[int, int, float, float]]) -> None:
    """Raise SimulationError naming both instructions of the earliest race in ``records``."""
    by_memory: dict[str, list[tuple[float, float, int, int, bool, int, int]]] = {}
    for e, pc, start, end in records:
        ins = machine.programs[e][pc]
        if end <= start or not moves_data(ins):
            continue
        for memory, lo, hi, write in accesses(ins):  # type: ignore[arg-type]
            by_memory.setdefault(memory, []).append((start, end, lo, hi, write, e, pc))
    found: list[tuple[float, str]] = []
    for memory, spans in by_memory.items():
        spans.sort()
        live: list[tuple[float, float, int, int, bool, int, int]] = []
        for a in spans:
            start, _, lo, hi, write, e, pc = a
            live = [b for b in live if b[1] > start]
            for b in live:
                if b[5] != e and b[2] < hi and lo < b[3] and (write or b[4]):
                    found.append((start, _message(machine, memory, a, b)))
                    break
            else:
                live.append(a)
                continue
            break
    if found:
        raise SimulationError(min(found)[1])


def _message(machine: Machine, memory: str, a: tuple, b: tuple) -> str:
    start, _, lo, hi, write, e, pc = a
    _, _, olo, ohi, owrite, oe, opc = b
    return (f"data race at t={start:.0f} ns in {memory}[0x{max(lo, olo):x}, 0x{min(hi, ohi):x}): "
            f"{machine.describe(e, pc)} {'writes' if write else 'reads'} while "
            f"{machine.describe(oe, opc)} {'writes' if owrite else 'reads'}; a semaphore "
            "between them is missing or an offset is wrong")
