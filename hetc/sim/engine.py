"""The discrete-event loop.

Events live in one heap keyed by (time, phase, sequence). Phases order what happens at one instant: every
instruction that ends at t finishes first, then semaphore increments that become visible at t, then engines
advance and start new instructions. So "ends at t" and "starts at t" never overlap, for the race detector too.

DRAM bandwidth is shared as a fluid: an instruction that streams ``dram_bytes`` in ``duration`` ns asks for
``dram_bytes / duration`` bytes/ns; when the concurrent asks exceed the DRAM bandwidth every DRAM user slows
down by the same factor, and its end event is re-timed (stale end events are recognised by a version number).
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from hetc.errors import SimulationError
from hetc.sim.functional import Executor
from hetc.sim.machine import SIGNAL, WAIT, Machine, Step, describe

END, VISIBLE, ADVANCE = 0, 1, 2


@dataclass
class Trace:
    records: list[tuple[int, int, float, float]]             # (engine, pc, start, end) per executed step
    sync: list[tuple[int, int, int, int, int, float]]        # (sem, src engine, src pc, dst engine, dst pc, t)
    events: int = 0
    stats: dict[str, float] = field(default_factory=dict)


class _Lane:
    __slots__ = ("steps", "pc", "version", "start", "wait_since", "remaining", "speed", "last")

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.pc = 0
        self.version = 0
        self.start = 0.0
        self.wait_since = 0.0
        self.remaining = 0.0
        self.speed = 1.0
        self.last = 0.0


def run(machine: Machine, executor: Executor | None = None, detect_races: bool = True,
        contention: bool = True) -> Trace:
    lanes = [_Lane(steps) for steps in machine.steps]
    heap: list[tuple[float, int, int, int, int]] = []
    seq = itertools.count()
    push, pop = heapq.heappush, heapq.heappop
    sync_ns = machine.sync_ns
    bandwidth = machine.dram_bandwidth
    sem_count = [0] * len(machine.semaphores)
    waiters: list[list[int]] = [[] for _ in machine.semaphores]
    signals: list[list[tuple[int, int]]] = [[] for _ in machine.semaphores]   # (engine, pc) per signal
    records: list[tuple[int, int, float, float]] = []
    sync: list[tuple[int, int, int, int, int, float]] = []
    active: dict[int, Step] = {}           # engine -> compute/dma step in flight
    dram_users: dict[int, float] = {}      # engine -> its DRAM rate
    slowest = 1.0

    def rebalance(t: float, joining: int = -1) -> None:
        nonlocal slowest
        total = sum(dram_users.values())
        speed = 1.0 if total <= bandwidth else bandwidth / total
        slowest = min(slowest, speed)
        for e in dram_users:
            lane = lanes[e]
            if e != joining and lane.speed == speed:
                continue
            if e != joining:
                lane.remaining = max(0.0, lane.remaining - (t - lane.last) * lane.speed)
            lane.last, lane.speed = t, speed
            lane.version += 1
            push(heap, (t + lane.remaining / speed, END, next(seq), e, lane.version))

    def check_races(step: Step, t: float) -> None:
        for other in active.values():
            for mem, lo, hi, write in step.accesses:
                for omem, olo, ohi, owrite in other.accesses:
                    if mem == omem and lo < ohi and olo < hi and (write or owrite):
                        raise SimulationError(
                            f"data race at t={t:.0f} ns in {mem}[0x{max(lo, olo):x}, 0x{min(hi, ohi):x}): "
                            f"{describe(machine, step)} {'writes' if write else 'reads'} while "
                            f"{describe(machine, other)} {'writes' if owrite else 'reads'}; a semaphore "
                            "between them is missing or an offset is wrong")

    def advance(e: int, t: float) -> None:
        lane = lanes[e]
        steps = lane.steps
        while lane.pc < len(steps):
            step = steps[lane.pc]
            code = step.code
            if code == SIGNAL:
                records.append((e, lane.pc, t, t))
                signals[step.sem].append((e, lane.pc))
                push(heap, (t + sync_ns, VISIBLE, next(seq), step.sem, 0))
                lane.pc += 1
            elif code == WAIT:
                if sem_count[step.sem] < step.count:
                    lane.wait_since = t
                    waiters[step.sem].append(e)
                    return
                src_e, src_pc = signals[step.sem][step.count - 1]
                sync.append((step.sem, src_e, src_pc, e, lane.pc, t))
                records.append((e, lane.pc, t, t))
                lane.pc += 1
            else:
                if detect_races and active:
                    check_races(step, t)
                if executor is not None:
                    executor.start(step)
                active[e] = step
                lane.start = t
                if contention and step.dram_rate:
                    lane.remaining = step.duration
                    dram_users[e] = step.dram_rate
                    rebalance(t, joining=e)
                else:
                    push(heap, (t + step.duration, END, next(seq), e, lane.version))
                return

    for e in range(len(lanes)):
        push(heap, (0.0, ADVANCE, next(seq), e, 0))
    events = 0
    while heap:
        t, phase, _, e, version = pop(heap)
        events += 1
        if phase == END:
            lane = lanes[e]
            if version != lane.version:
                continue
            step = lane.steps[lane.pc]
            if executor is not None:
                executor.finish(step)
            records.append((e, lane.pc, lane.start, t))
            del active[e]
            if e in dram_users:
                del dram_users[e]
                lane.speed = 1.0
                lane.version += 1
                if dram_users:
                    rebalance(t)
            lane.pc += 1
            push(heap, (t, ADVANCE, next(seq), e, 0))
        elif phase == VISIBLE:
            sem = e
            sem_count[sem] += 1
            still = []
            for w in waiters[sem]:
                lane = lanes[w]
                step = lane.steps[lane.pc]
                if sem_count[sem] >= step.count:
                    src_e, src_pc = signals[sem][step.count - 1]
                    sync.append((sem, src_e, src_pc, w, lane.pc, t))
                    records.append((w, lane.pc, lane.wait_since, t))
                    lane.pc += 1
                    push(heap, (t, ADVANCE, next(seq), w, 0))
                else:
                    still.append(w)
            waiters[sem] = still
        else:
            advance(e, t)

    stuck = [(e, lane) for e, lane in enumerate(lanes) if lane.pc < len(lane.steps)]
    if stuck:
        raise SimulationError("deadlock: " + "; ".join(_stuck_reason(machine, e, lane, sem_count)
                                                       for e, lane in stuck)
                              + "; the programs' semaphores can never be satisfied, rebuild the bundle")
    return Trace(records=records, sync=sync, events=events, stats={"dram_min_speed": slowest})


def _stuck_reason(machine: Machine, e: int, lane: _Lane, sem_count: list[int]) -> str:
    step = lane.steps[lane.pc]
    name = machine.engines[e]
    if step.code != WAIT:
        return f"{name} stopped at instruction {lane.pc}"
    sem = machine.semaphores[step.sem]
    return (f"{name}[{lane.pc}] waits for {sem} to reach {step.count} but it only reached "
            f"{sem_count[step.sem]} (signalled by {machine.signaller[sem]})")
