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

from hetc.codegen.program import Compute, Dma
from hetc.errors import SimulationError
from hetc.sim.machine import Machine

END, START = 0, 1   # at one instant, DRAM users leave before new ones join
INFINITY = float("inf")


@dataclass
class Trace:
    records: list[tuple[int, int, float, float]]             # (engine, pc, start, end) per executed step
    signals: dict[str, list[float]]                          # sem -> visible time of each signal, issue order

    def sync_edges(self, machine: Machine) -> list[tuple[str, int, int, int, int, float]]:
        """(sem, signalling engine, its pc, waiting engine, its pc, release time) for every executed wait: the
        COUNT-th signal of its semaphore released it. Signals are recorded when issued, so the records list
        them in issue order."""
        issuers: dict[str, list[tuple[int, int]]] = {}
        for e, pc, _, _ in self.records:
            ins = machine.programs[e][pc]
            if ins.kind == "signal":
                issuers.setdefault(ins.sem, []).append((e, pc))
        edges = []
        for e, pc, _, released in self.records:
            ins = machine.programs[e][pc]
            if ins.kind == "wait":
                src_e, src_pc = issuers[ins.sem][ins.count - 1]
                edges.append((ins.sem, src_e, src_pc, e, pc, released))
        return edges
    heap_events: int = 0
    stats: dict[str, float] = field(default_factory=dict)


class _Lane:
    __slots__ = ("program", "pc", "now", "wait_since", "version", "start", "remaining", "last")

    def __init__(self, program: tuple) -> None:
        self.program = program
        self.pc = 0
        self.now = 0.0          # the engine's clock: when its current instruction may start
        self.wait_since = 0.0
        self.version = 0
        self.start = 0.0
        self.remaining = 0.0    # DRAM users: nominal ns of work left ...
        self.last = 0.0         # ... as of this time


def run(machine: Machine, contention: bool = True) -> Trace:
    lanes = [_Lane(program) for program in machine.programs]
    sync_ns = machine.sync_ns
    bandwidth = machine.dram_bandwidth
    # Per semaphore, when each signal issued so far becomes visible (in issue order).
    signals: defaultdict[str, list[float]] = defaultdict(list)
    waiting: dict[tuple[str, int], list[int]] = {}   # (sem, count) -> engines blocked until that signal
    records: list[tuple[int, int, float, float]] = []
    heap: list[tuple[float, int, int, int, int]] = []
    seq = itertools.count()
    push, pop = heapq.heappush, heapq.heappop
    ready = list(range(len(lanes)))[::-1]
    dram_users: dict[int, float] = {}   # engine -> the DRAM rate its running instruction asks for
    slowest = 1.0

    # Runs every ready engine until it blocks on a wait, needs DRAM (an event) or finishes. The inner loop runs
    # once per instruction, so everything it touches is bound once as a default argument (CPython's fastest
    # variable lookup) and engines are switched inside the function rather than by calling it per engine.
    def drain(lanes=lanes, record=records.append, sharing=contention, delay=sync_ns,  # noqa: B008
              issued_by=signals, blocked_on=waiting, ready=ready) -> None:
        while ready:
            e = ready.pop()
            lane = lanes[e]
            program = lane.program
            pc, t, n = lane.pc, lane.now, len(program)
            while pc < n:
                ins = program[pc]
                kind = ins.kind
                if kind == "compute" or kind == "dma":
                    end = t + ins.duration_ns
                    if sharing and ins.dram_bytes and ins.duration_ns > 0:
                        # Nothing can happen before the earliest pending event or ready engine's clock: a
                        # start before that needs no event, and if the end comes before it too and DRAM stays
                        # unsaturated, the instruction runs at full speed with no event at all.
                        horizon = heap[0][0] if heap else INFINITY
                        for other in ready:
                            if lanes[other].now < horizon:
                                horizon = lanes[other].now
                        if t >= horizon:
                            push(heap, (t, START, next(seq), e, 0))
                            break
                        if end >= horizon or speed != 1.0 or (
                                total_rate + ins.dram_bytes / ins.duration_ns > bandwidth):
                            begin(e, lane, ins, t)
                            break
                    record((e, pc, t, end))
                    t = end
                elif kind == "signal":
                    s = ins.sem
                    shown = t + delay
                    issued = issued_by[s]
                    issued.append(shown)
                    record((e, pc, t, t))
                    blocked = blocked_on.pop((s, len(issued)), None) if blocked_on else None
                    if blocked:
                        for w in blocked:
                            other = lanes[w]
                            since = other.wait_since
                            released = shown if shown > since else since
                            record((w, other.pc, since, released))
                            other.pc += 1
                            other.now = released
                            ready.append(w)
                else:   # wait
                    s, count = ins.sem, ins.count
                    issued = issued_by[s]
                    if len(issued) < count:
                        blocked_on.setdefault((s, count), []).append(e)
                        lane.wait_since = t
                        break
                    shown = issued[count - 1]
                    released = shown if shown > t else t
                    record((e, pc, t, released))
                    t = released
                pc += 1
            lane.pc, lane.now = pc, t

    def reshare(t: float, total: float) -> None:
        """Every DRAM user runs at one common speed; when it changes, bank each user's progress at the old
        speed and re-time its end at the new one (a newcomer is not in ``dram_users`` yet). Callers skip it
        while the speed is 1 and stays 1."""
        nonlocal speed, slowest
        new = 1.0 if total <= bandwidth else bandwidth / total
        if new == speed:
            return   # every pending end event is still right
        for e in dram_users:
            lane = lanes[e]
            lane.remaining = max(0.0, lane.remaining - (t - lane.last) * speed)
            lane.last = t
            lane.version += 1
            push(heap, (t + lane.remaining / new, END, next(seq), e, lane.version))
        speed = new
        slowest = min(slowest, new)

    def begin(e: int, lane: _Lane, ins: Compute | Dma, t: float) -> None:
        """A DRAM user starts at t: it joins the sharing and its end becomes an event."""
        nonlocal total_rate
        rate = ins.dram_bytes / ins.duration_ns
        total_rate += rate
        if speed != 1.0 or total_rate > bandwidth:   # (the common case, no slowdown, needs no call)
            reshare(t, total_rate)   # re-times the others first
        dram_users[e] = rate
        lane.start = lane.last = t
        lane.remaining = float(ins.duration_ns)
        lane.version += 1
        push(heap, (t + lane.remaining / speed, END, next(seq), e, lane.version))

    popped = 0
    speed = 1.0           # the common speed of DRAM users, as a fraction of their own
    total_rate = 0.0      # bytes/ns the running DRAM users ask for
    while True:
        drain()
        if not heap:
            break
        t, phase, _, e, version = pop(heap)
        popped += 1
        lane = lanes[e]
        if phase == START:
            begin(e, lane, lane.program[lane.pc], t)
        elif version == lane.version:
            lane.version += 1
            total_rate -= dram_users.pop(e)
            if not dram_users:
                total_rate = 0.0   # no rounding drift across idle periods
            if speed != 1.0:
                reshare(t, total_rate)
            records.append((e, lane.pc, lane.start, t))
            lane.pc += 1
            lane.now = t
            ready.append(e)

    stuck = [e for e, lane in enumerate(lanes) if lane.pc < len(lane.program)]
    if stuck:
        raise SimulationError("deadlock: " + "; ".join(_stuck_reason(machine, e, lanes[e], signals) for e in stuck)
                              + "; these waits can never be satisfied, so the programs are inconsistent: rebuild "
                              "the bundle")
    return Trace(records=records, signals=dict(signals), heap_events=popped, stats={"dram_min_speed": slowest})


def _stuck_reason(machine: Machine, e: int, lane: _Lane, signals: dict[str, list[float]]) -> str:
    ins = lane.program[lane.pc]
    name = machine.engines[e]
    if ins.kind != "wait":
        return f"{name} stopped at instruction {lane.pc}"
    return (f"{name}[{lane.pc}] waits for {ins.sem} to reach {ins.count} but it only reached "
            f"{len(signals[ins.sem])} (signalled by {machine.signaller(ins.sem)})")
