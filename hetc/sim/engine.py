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

The loop reads the programs' instruction objects directly: a decode pass into another form would touch every
instruction once more, and the loop's cost is CPython's per-bytecode overhead, not the instruction objects.
What it does instead: per-engine state in lists indexed by engine, one dict entry per semaphore holding both
its signals' visible times and its blocked waiters, instructions told apart by their class so that every field
read is specialised by CPython 3.11, records appended with ``list.append`` and program counters taken from one
cached list of ints (``tools/bench_sim.py`` measures it against SimPy).
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from hetc.codegen.program import Compute, Signal, Wait
from hetc.errors import SimulationError
from hetc.sim.machine import Machine

END, START = 0, 1   # at one instant, DRAM users leave before new ones join
INFINITY = float("inf")


@dataclass
class Trace:
    # (engine, pc, start, end) per executed step, in execution order: a step comes after every step that
    # happens before it (its engine's earlier steps, the signal that released a wait); the memory curves rely
    # on it.
    records: list[tuple[int, int, float, float]]
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
            if ins.kind == "wait" and ins.count:
                src_e, src_pc = issuers[ins.sem][ins.count - 1]
                edges.append((ins.sem, src_e, src_pc, e, pc, released))
        return edges
    heap_events: int = 0
    stats: dict[str, float] = field(default_factory=dict)


def run(machine: Machine, contention: bool = True) -> Trace:
    """Simulate the machine's programs timing-only; ``contention`` shares DRAM bandwidth between its users.
    Raises SimulationError naming every blocked engine, instruction and semaphore on a deadlock."""
    programs = machine.programs
    n_engines = len(programs)
    pc_numbers = _pc_numbers(max(map(len, programs), default=0))
    steps = [zip(pc_numbers, program) for program in programs]   # each resumes where its engine stopped
    nows = [0.0] * n_engines   # per engine: its clock, or since when it waits (blocked or ready)
    pcs = [0] * n_engines      # per engine: the instruction it is blocked on (a wait or a DRAM user)
    done = [not program for program in programs]
    users = [_DramUser() for _ in programs]
    sync_ns = machine.sync_ns
    bandwidth = machine.dram_bandwidth
    # Per semaphore: [visible time of each signal issued so far (issue order), {count: engines blocked until
    # that signal}]; one lookup gives both, since a signal must check its waiters and a wait its signals.
    sems: dict[str, list] = {}
    records: list[tuple[int, int, float, float]] = []
    heap: list[tuple[float, int, int, int, int]] = []
    seq = itertools.count()
    push, pop = heapq.heappush, heapq.heappop
    ready = list(range(n_engines))[::-1]
    dram_users: dict[int, float] = {}   # engine -> the DRAM rate its running instruction asks for
    slowest = 1.0

    # Runs every ready engine until it blocks on a wait, needs DRAM (an event) or finishes. The inner loop runs
    # once per instruction, so everything it touches is bound once as a default argument (CPython's fastest
    # variable lookup), engines are switched inside the function rather than by calling it per engine, records
    # are added with ``records.append`` (which CPython specialises, unlike a bound method held in a variable),
    # and
    # instructions are told apart by ``type(ins) is ...``: reading ``ins.kind`` at one place from four
    # instruction classes defeats CPython 3.11's attribute specialisation, while each field read below only
    # ever sees one class.
    def drain(steps=steps, nows=nows, pcs=pcs, done=done, records=records, sharing=contention, delay=sync_ns,
              sems=sems, ready=ready, Compute=Compute, Wait=Wait, Signal=Signal) -> None:
        while ready:
            e = ready.pop()
            t = nows[e]
            for pc, ins in steps[e]:
                cls = type(ins)
                if cls is Compute:
                    end = t + ins.duration_ns
                    if not sharing or not ins.dram_bytes or ins.duration_ns <= 0:
                        records.append((e, pc, t, end))
                        t = end
                        continue
                    rate = ins.dram_bytes / ins.duration_ns
                elif cls is Wait:
                    try:
                        sem = sems[ins.sem]
                    except KeyError:   # (once per semaphore: a plain dict reads faster than a defaultdict)
                        sem = sems[ins.sem] = [[], {}]
                    shown_by = sem[0]
                    count = ins.count
                    if len(shown_by) < count:
                        waiters = sem[1]
                        blocked = waiters.get(count)
                        if blocked is None:
                            waiters[count] = [e]
                        else:
                            blocked.append(e)
                        pcs[e] = pc
                        nows[e] = t
                        break
                    shown = shown_by[count - 1] if count else t
                    if shown > t:
                        records.append((e, pc, t, shown))
                        t = shown
                    else:
                        records.append((e, pc, t, t))
                    continue
                elif cls is Signal:
                    try:
                        sem = sems[ins.sem]
                    except KeyError:
                        sem = sems[ins.sem] = [[], {}]
                    shown_by = sem[0]
                    shown = t + delay
                    shown_by.append(shown)
                    records.append((e, pc, t, t))
                    if sem[1]:
                        blocked = sem[1].pop(len(shown_by), None)
                        if blocked:
                            for w in blocked:
                                since = nows[w]
                                released = shown if shown > since else since
                                records.append((w, pcs[w], since, released))
                                nows[w] = released
                                ready.append(w)
                    continue
                else:   # Dma
                    end = t + ins.duration_ns
                    if not sharing or not ins.dram_bytes or ins.duration_ns <= 0:
                        records.append((e, pc, t, end))
                        t = end
                        continue
                    rate = ins.dram_bytes / ins.duration_ns
                # A DRAM user with sharing on. Nothing can happen before the earliest pending event or ready
                # engine's clock: a start before that needs no event, and if the end comes before it too and
                # DRAM stays unsaturated, the instruction runs at full speed with no event at all.
                horizon = heap[0][0] if heap else INFINITY
                for other in ready:
                    if nows[other] < horizon:
                        horizon = nows[other]
                if t >= horizon:
                    pcs[e] = pc
                    push(heap, (t, START, next(seq), e, 0))
                    break
                if end >= horizon or speed != 1.0 or total_rate + rate > bandwidth:
                    pcs[e] = pc
                    begin(e, rate, ins.duration_ns, t)
                    break
                records.append((e, pc, t, end))
                t = end
            else:
                done[e] = True
                nows[e] = t   # its clock at the end: the last of its records ends there

    def reshare(t: float, total: float) -> None:
        """Every DRAM user runs at one common speed; when it changes, bank each user's progress at the old
        speed and re-time its end at the new one (a newcomer is not in ``dram_users`` yet). Callers skip it
        while the speed is 1 and stays 1."""
        nonlocal speed, slowest
        new = 1.0 if total <= bandwidth else bandwidth / total
        if new == speed:
            return   # every pending end event is still right
        for e in dram_users:
            user = users[e]
            user.remaining = max(0.0, user.remaining - (t - user.last) * speed)
            user.last = t
            user.version += 1
            push(heap, (t + user.remaining / new, END, next(seq), e, user.version))
        speed = new
        slowest = min(slowest, new)

    def begin(e: int, rate: float, duration: int, t: float) -> None:
        """A DRAM user asking ``rate`` bytes/ns for ``duration`` ns alone starts at t: it joins the sharing
        and its end becomes an event."""
        nonlocal total_rate
        total_rate += rate
        if speed != 1.0 or total_rate > bandwidth:   # (the common case, no slowdown, needs no call)
            reshare(t, total_rate)   # re-times the others first
        dram_users[e] = rate
        user = users[e]
        user.start = user.last = t
        user.remaining = float(duration)
        user.version += 1
        push(heap, (t + user.remaining / speed, END, next(seq), e, user.version))

    popped = 0
    speed = 1.0           # the common speed of DRAM users, as a fraction of their own
    total_rate = 0.0      # bytes/ns the running DRAM users ask for
    while True:
        if ready:
            drain()
        if not heap:
            break
        t, phase, _, e, version = pop(heap)   # (no engine is ready now: drain ran them all)
        popped += 1
        user = users[e]
        if phase == START:
            ins = programs[e][pcs[e]]
            duration = ins.duration_ns
            rate = ins.dram_bytes / duration
            end = t + duration
            # As in drain: nothing happens before the next event, so a user that ends before it at full speed
            # and leaves DRAM unsaturated needs no end event.
            if speed == 1.0 and total_rate + rate <= bandwidth and (not heap or end < heap[0][0]):
                if dram_users:   # the rounding a begin and its end would leave in the running total
                    total_rate = total_rate + rate - rate
                records.append((e, pcs[e], t, end))
                nows[e] = end
                ready.append(e)
            else:
                begin(e, rate, duration, t)
        elif version == user.version:
            user.version += 1
            total_rate -= dram_users.pop(e)
            if not dram_users:
                total_rate = 0.0   # no rounding drift across idle periods
            if speed != 1.0:
                reshare(t, total_rate)
            records.append((e, pcs[e], user.start, t))
            nows[e] = t
            ready.append(e)

    signals = {s: sem[0] for s, sem in sems.items()}
    stuck = [e for e in range(n_engines) if not done[e]]
    if stuck:
        raise SimulationError("deadlock: " + "; ".join(_stuck_reason(machine, e, pcs[e], signals) for e in stuck)
                              + "; these waits can never be satisfied, so the programs are inconsistent: rebuild "
                              "the bundle")
    # Every engine's records end by its final clock, and its last one ends there: the run's end is the latest.
    return Trace(records=records, signals=signals, heap_events=popped,
                 stats={"dram_min_speed": slowest, "end_ns": max(nows, default=0.0)})


_PC_NUMBERS: list[int] = []


def _pc_numbers(n: int) -> list[int]:
    """At least ``n`` program counters 0, 1, ...: the same int objects every run, so that the records do not
    allocate one per instruction (``enumerate`` would, beyond CPython's cached small ints)."""
    if len(_PC_NUMBERS) < n:
        _PC_NUMBERS.extend(range(len(_PC_NUMBERS), n))
    return _PC_NUMBERS


class _DramUser:
    """The running DRAM instruction of one engine: when it started, its nominal ns of work left as of
    ``last``, and the version of its pending end event (older ones are stale)."""

    __slots__ = ("start", "remaining", "last", "version")

    def __init__(self) -> None:
        self.start = 0.0
        self.remaining = 0.0
        self.last = 0.0
        self.version = 0


def _stuck_reason(machine: Machine, e: int, pc: int, signals: dict[str, list[float]]) -> str:
    ins = machine.programs[e][pc]
    name = machine.engines[e]
    if not isinstance(ins, Wait):
        return f"{name} stopped at instruction {pc}"
    return (f"{name}[{pc}] waits for {ins.sem} to reach {ins.count} but it only reached "
            f"{len(signals.get(ins.sem, ()))} (signalled by {machine.signaller(ins.sem)})")
