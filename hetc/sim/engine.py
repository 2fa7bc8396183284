"""The discrete-event timing engine.

Every engine walks its own program on its own clock. Only *interactions* between engines become events:

* a ``signal`` records when its semaphore increment becomes visible (issue time + ``sync_ns``) and releases
  the engines already blocked on that count;
* a ``wait`` whose signal is visible by the engine's clock passes; one whose signal is issued but not yet
  visible moves the clock forward; one whose signal is not issued yet blocks the engine until it is;
* an instruction that streams through DRAM (CPU computes, DMAs to or from DRAM) shares DRAM bandwidth with
  every other one running at the same time, so its end depends on the others: its start and end are events
  in a heap keyed by (time, phase, sequence), processed in time order.

Between interactions an engine runs ahead without events (computes on a scratchpad, NPU<->DSP copies): nobody
can observe them, so creating heap entries for them would only cost time. The invariant that makes this exact:
a time is computed only when all its inputs are final (a signal is issued only once its engine's clock is
exact), and no event is ever pushed earlier than the last one popped.

DRAM bandwidth is shared as a fluid: an instruction that streams ``dram_bytes`` in ``duration`` ns asks for
``dram_bytes / duration`` bytes/ns; when the asks exceed the DRAM bandwidth every DRAM user slows down by the
same factor and its end event is re-timed (stale end events carry an old version number and are skipped).

The engine produces a trace of (engine, pc, start, end); the race detector and the functional replay work on
that trace (``hetc.sim.races``, ``hetc.sim.functional``).
"""
from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from hetc.errors import SimulationError
from hetc.sim.machine import Machine

END, START = 0, 1   # at one instant, DRAM users leave before new ones join


@dataclass
class Trace:
    records: list[tuple[int, int, float, float]]             # (engine, pc, start, end) per executed step
    sync: list[tuple[str, int, int, int, int, float]]        # (sem, src engine, src pc, dst engine, dst pc, t)
    heap_events: int = 0
    stats: dict[str, float] = field(default_factory=dict)


class _Lane:
    __slots__ = ("program", "pc", "now", "wait_since", "version", "start", "remaining", "speed", "last")

    def __init__(self, program: tuple) -> None:
        self.program = program
        self.pc = 0
        self.now = 0.0          # the engine's clock: when its current instruction may start
        self.wait_since = 0.0
        self.version = 0
        self.start = 0.0
        self.remaining = 0.0    # DRAM users: nominal ns of work left
        self.speed = 1.0
        self.last = 0.0


def run(machine: Machine, contention: bool = True) -> Trace:
    lanes = [_Lane(program) for program in machine.programs]
    sync_ns = machine.sync_ns
    bandwidth = machine.dram_bandwidth
    # Per semaphore, each signal issued so far: (when it becomes visible, engine, pc).
    signals: defaultdict[str, list[tuple[float, int, int]]] = defaultdict(list)
    waiters: defaultdict[str, dict[int, list[int]]] = defaultdict(dict)  # sem -> count -> engines blocked
    records: list[tuple[int, int, float, float]] = []
    sync: list[tuple[str, int, int, int, int, float]] = []
    heap: list[tuple[float, int, int, int, int]] = []
    seq = itertools.count()
    push, pop = heapq.heappush, heapq.heappop
    ready = list(range(len(lanes)))[::-1]
    dram_users: dict[int, float] = {}   # engine -> the DRAM rate its running instruction asks for
    slowest = 1.0

    def advance(e: int) -> None:
        lane = lanes[e]
        program = lane.program
        pc, t, n = lane.pc, lane.now, len(program)
        # Closure variables as locals: this loop runs once per instruction.
        record, sharing, delay, issued_by, blocked_on = records.append, contention, sync_ns, signals, waiters
        while pc < n:
            ins = program[pc]
            kind = ins.kind
            if kind == "compute" or kind == "dma":
                if sharing and ins.dram_bytes and ins.duration_ns > 0:
                    lane.pc, lane.now = pc, t
                    push(heap, (t, START, next(seq), e, 0))
                    return
                end = t + ins.duration_ns
                record((e, pc, t, end))
                t = end
            elif kind == "signal":
                s = ins.sem
                shown = t + delay
                issued = issued_by[s]
                issued.append((shown, e, pc))
                record((e, pc, t, t))
                blocked = blocked_on[s].pop(len(issued), None)
                if blocked:
                    for w in blocked:
                        other = lanes[w]
                        since = other.wait_since
                        released = shown if shown > since else since
                        sync.append((s, e, pc, w, other.pc, released))
                        record((w, other.pc, since, released))
                        other.pc += 1
                        other.now = released
                        ready.append(w)
            else:   # wait
                s, count = ins.sem, ins.count
                issued = issued_by[s]
                if len(issued) < count:
                    blocked_on[s].setdefault(count, []).append(e)
                    lane.pc, lane.now, lane.wait_since = pc, t, t
                    return
                shown, src_e, src_pc = issued[count - 1]
                released = shown if shown > t else t
                sync.append((s, src_e, src_pc, e, pc, released))
                record((e, pc, t, released))
                t = released
            pc += 1
        lane.pc, lane.now = pc, t

    def rebalance(t: float, joining: int = -1) -> None:
        nonlocal slowest
        total = sum(dram_users.values())
        speed = 1.0 if total <= bandwidth else bandwidth / total
        slowest = min(slowest, speed)
        for e in dram_users:
            lane = lanes[e]
            if e != joining and lane.speed == speed:
                continue   # its end event is still right
            if e != joining:
                lane.remaining = max(0.0, lane.remaining - (t - lane.last) * lane.speed)
            lane.last, lane.speed = t, speed
            lane.version += 1
            push(heap, (t + lane.remaining / speed, END, next(seq), e, lane.version))

    popped = 0
    while True:
        while ready:
            advance(ready.pop())
        if not heap:
            break
        t, phase, _, e, version = pop(heap)
        popped += 1
        lane = lanes[e]
        if phase == START:
            ins = lane.program[lane.pc]
            lane.start = lane.last = t
            lane.remaining = float(ins.duration_ns)
            dram_users[e] = ins.dram_bytes / ins.duration_ns
            rebalance(t, joining=e)
        elif version == lane.version:
            del dram_users[e]
            lane.speed = 1.0
            lane.version += 1
            if dram_users:
                rebalance(t)
            records.append((e, lane.pc, lane.start, t))
            lane.pc += 1
            lane.now = t
            ready.append(e)

    stuck = [e for e, lane in enumerate(lanes) if lane.pc < len(lane.program)]
    if stuck:
        raise SimulationError("deadlock: " + "; ".join(_stuck_reason(machine, e, lanes[e], signals) for e in stuck)
                              + "; these waits can never be satisfied, so the programs are inconsistent: rebuild "
                              "the bundle")
    return Trace(records=records, sync=sync, heap_events=popped, stats={"dram_min_speed": slowest})


def _stuck_reason(machine: Machine, e: int, lane: _Lane, signals: dict[str, list[tuple[float, int, int]]]) -> str:
    ins = lane.program[lane.pc]
    name = machine.engines[e]
    if ins.kind != "wait":
        return f"{name} stopped at instruction {lane.pc}"
    return (f"{name}[{lane.pc}] waits for {ins.sem} to reach {ins.count} but it only reached "
            f"{len(signals[ins.sem])} (signalled by {machine.signaller(ins.sem)})")
