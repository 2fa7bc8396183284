"""The SimResult artifact: what the discrete-event simulator observed, and how a timing trace becomes one.

A timing run's events, sync edges and memory curves cost several times the event loop to build (one object
per executed instruction), and a sweep point reads none of them: ``timing_result`` defers them (``Deferred``)
and a SimResult computes a deferred field at its first read. Callers see the same values: every read,
``==``, ``repr``, ``dataclasses.replace`` and pickling go through the field.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hetc.codegen.program import Compute, Dma, Instruction, Wait

if TYPE_CHECKING:
    from hetc.codegen.bundle import Bundle
    from hetc.sim.engine import Trace
    from hetc.sim.machine import Machine


@dataclass(frozen=True)
class SimEvent:
    """One executed instruction of one engine's program."""

    engine: str
    index: int                  # position in that engine's program
    kind: str                   # "compute" | "dma" | "wait" | "signal"
    name: str                   # node name, "copy <value> a->b", or the semaphore
    start_ns: float
    end_ns: float
    planned_start_ns: float | None = None
    planned_end_ns: float | None = None
    task: int | None = None     # schedule task id, for compute and dma
    args: dict[str, Any] = field(default_factory=dict)  # op, shapes, bytes, memory...


@dataclass(frozen=True)
class SyncEdge:
    """A semaphore that ordered two instructions of different engines (signal -> the wait it released)."""

    semaphore: str
    src_engine: str
    src_index: int
    dst_engine: str
    dst_index: int
    time_ns: float


@dataclass(frozen=True)
class SimResult:
    makespan_ns: float
    planned_makespan_ns: float
    events: tuple[SimEvent, ...]
    sync_edges: tuple[SyncEdge, ...]
    memory_usage: dict[str, tuple[tuple[float, int], ...]]  # memory -> (time, bytes in use) steps
    outputs: dict[str, np.ndarray] | None = None             # functional mode only
    stats: dict[str, Any] = field(default_factory=dict)      # events processed, wall time, contention...
    probes: dict[str, np.ndarray] | None = None              # values asked for by name (functional mode)

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}   # deferred fields computed

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class Deferred:
    """A field value computed by ``compute`` at the first read of any SimResult holding it, then kept (results
    of one prepared simulation share it; ``copy`` gives each its own copy of a mutable value)."""

    def __init__(self, compute: Callable[[], Any], copy: Callable[[Any], Any] | None = None) -> None:
        self._compute, self._copy = compute, copy
        self._value: Any = None
        self._done = False
        self._lock = threading.Lock()

    def value(self) -> Any:
        if not self._done:
            with self._lock:
                if not self._done:
                    self._value = self._compute()
                    self._done, self._compute = True, None
        return self._copy(self._value) if self._copy is not None else self._value

    def copied(self) -> "Deferred":
        """A Deferred for another result: the same computation, its own copy of the value."""
        return self if self._copy is None else Deferred(self.value)


class _DeferrableField:
    """Data descriptor over a SimResult field: stores what ``__init__`` gives and turns a Deferred into its
    value at the first read."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name]
        if isinstance(value, Deferred):
            value = value.value()
            obj.__dict__[self.name] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


for _name in ("events", "sync_edges", "memory_usage"):   # installed after @dataclass: not taken as defaults
    setattr(SimResult, _name, _DeferrableField(_name))


def with_run(result: SimResult, outputs: dict[str, Any] | None, stats: dict[str, Any],
             probes: dict[str, Any] | None = None) -> SimResult:
    """``result`` with a run's outputs, probed values and stats, its deferred fields still deferred (``replace``
    would compute them)."""
    state = result.__dict__
    deferred = {name: value.copied() if isinstance(value, Deferred) else value
                for name in ("events", "sync_edges", "memory_usage") for value in (state[name],)}
    if not isinstance(deferred["memory_usage"], Deferred):
        deferred["memory_usage"] = dict(deferred["memory_usage"])
    return SimResult(makespan_ns=result.makespan_ns, planned_makespan_ns=result.planned_makespan_ns,
                     outputs=outputs, stats=stats, probes=probes, **deferred)


def timing_result(bundle: "Bundle", machine: "Machine", trace: "Trace") -> SimResult:
    """Everything a run observes but its outputs: events, sync edges, memory usage over time, makespan."""
    engines = machine.engines
    # What the memory curves read from the bundle, so that an unread result does not hold the constants image
    weights_end, outputs = len(bundle.constants), bundle.outputs

    def events() -> tuple[SimEvent, ...]:
        order = sorted(trace.records, key=lambda r: (r[2], engines[r[0]], r[1]))
        return tuple(_event(engines[e], pc, machine.programs[e][pc], start, end) for e, pc, start, end in order)

    def edges() -> tuple[SyncEdge, ...]:
        return tuple(SyncEdge(s, engines[se], sp, engines[de], dp, t)
                     for s, se, sp, de, dp, t in trace.sync_edges(machine))

    makespan = trace.stats["end_ns"] if "end_ns" in trace.stats else max((r[3] for r in trace.records), default=0.0)
    planned = float(bundle.manifest.get("planned_makespan_ns", 0))
    stats: dict[str, Any] = {"dram_min_speed": trace.stats["dram_min_speed"],
                             "slowdown": makespan / planned if planned else 1.0}
    return SimResult(makespan_ns=makespan, planned_makespan_ns=planned, events=Deferred(events),
                     sync_edges=Deferred(edges), stats=stats,
                     memory_usage=Deferred(lambda: _memory_usage(weights_end, outputs, machine, trace, makespan),
                                           copy=dict))


def _event(engine: str, pc: int, ins: Instruction, start: float, end: float) -> SimEvent:
    if isinstance(ins, Compute):
        return SimEvent(engine, pc, "compute", ins.name, start, end, ins.planned_start_ns, ins.planned_end_ns,
                        ins.task, {"op": ins.op, "node": ins.node, "kernel": ins.kernel,
                                   "inputs": [list(o.shape) for o in ins.inputs if o is not None],
                                   "outputs": [list(o.shape) for o in ins.outputs],
                                   "bytes": sum(o.nbytes for o in ins.outputs)})
    if isinstance(ins, Dma):
        return SimEvent(engine, pc, "dma", f"copy {ins.value} {ins.src.memory}->{ins.dst.memory}", start, end,
                        ins.planned_start_ns, ins.planned_end_ns, ins.task,
                        {"value": ins.value, "bytes": ins.bytes, "src": ins.src.memory, "dst": ins.dst.memory})
    if isinstance(ins, Wait):
        return SimEvent(engine, pc, "wait", ins.sem, start, end, args={"count": ins.count})
    return SimEvent(engine, pc, "signal", ins.sem, start, end)


def _memory_usage(weights_end: int, outputs: list[dict[str, Any]], machine: "Machine", trace: "Trace",
                  makespan: float) -> dict[str, tuple[tuple[float, int], ...]]:
    """Bytes in use per memory over simulated time: a storage is live from its first write (0 for inputs and
    weights) to its last access (the end of the run for graph outputs and the read-only weights region)."""
    # (memory, storage) -> [first write, last access, first byte, end byte]: a storage's operands may lie at
    # offsets in it (regions of a tensor, Assemble parts), so its bytes are the hull of theirs
    live: dict[tuple[str, str], list] = {}
    for e, pc, start, end in trace.records:
        ins = machine.programs[e][pc]
        if isinstance(ins, Dma):
            operands = ((ins.src, False), (ins.dst, True))
        elif isinstance(ins, Compute):
            operands = tuple((o, False) for o in ins.inputs if o is not None) + tuple((o, True) for o in ins.outputs)
        else:
            continue
        for o, write in operands:
            if not o.has_bytes:
                continue   # a host value or an immediate occupies no simulated memory
            key = (o.memory, o.storage)
            span = live.get(key)
            if span is None:
                live[key] = [start if write else 0.0, end, o.offset, o.end]
                continue
            if write and start < span[0]:
                span[0] = start
            if end > span[1]:
                span[1] = end
            span[2], span[3] = min(span[2], o.offset), max(span[3], o.end)
    # the read-only region (the constants image, ``weights_end`` bytes) stays reserved for the whole run
    for (memory, _), span in live.items():
        if memory == machine.dram and span[2] < weights_end:
            span[1] = makespan
    for b in outputs:   # outputs stay until the caller reads them: the latest storage at the binding
        at = [span for (memory, _), span in live.items() if memory == b["memory"] and span[2] == b["offset"]]
        if at:
            max(at, key=lambda span: span[0])[1] = makespan
    deltas: dict[str, list[tuple[float, int]]] = {}
    for (memory, _), (start, end, lo, hi) in live.items():
        size = hi - lo
        deltas.setdefault(memory, []).extend(((start, size), (end, -size)))
    usage: dict[str, tuple[tuple[float, int], ...]] = {}
    for memory, changes in sorted(deltas.items()):
        changes.sort()
        level, points = 0, []
        for t, d in changes:
            level += d
            if points and points[-1][0] == t:
                points[-1] = (t, level)
            else:
                points.append((t, level))
        usage[memory] = tuple(points)
    return usage


def count_events(machine: "Machine", trace: "Trace") -> int:
    """Simulated state changes: a start and an end per compute/DMA, one per signal and per wait."""
    records = trace.records
    if len(records) == machine.n_instructions:   # a finished run executes every instruction once
        return len(records) + sum(map(_computes_and_dmas, machine.programs))
    return sum(2 if machine.programs[e][pc].kind in ("compute", "dma") else 1 for e, pc, _, _ in records)


# The last programs counted: (instruction tuple, its computes and DMAs). Holding the tuple keeps its id its own.
_counted: list[tuple[tuple, int]] = []


def _computes_and_dmas(program: tuple[Instruction, ...]) -> int:
    """How many computes and DMAs ``program`` has, kept for the last few programs (a sweep point runs the same
    ones again)."""
    for kept, count in _counted:
        if kept is program:
            return count
    count = sum(map((Compute, Dma).__contains__, map(type, program)))
    _counted.insert(0, (program, count))
    del _counted[32:]
    return count
