"""The SimResult artifact: what the discrete-event simulator observed, and how a timing trace becomes one."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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


def timing_result(bundle: "Bundle", machine: "Machine", trace: "Trace") -> SimResult:
    """Everything a run observes but its outputs: events, sync edges, memory usage over time, makespan."""
    engines = machine.engines
    order = sorted(trace.records, key=lambda r: (r[2], engines[r[0]], r[1]))
    events = tuple(_event(engines[e], pc, machine.programs[e][pc], start, end) for e, pc, start, end in order)
    edges = tuple(SyncEdge(s, engines[se], sp, engines[de], dp, t)
                  for s, se, sp, de, dp, t in trace.sync_edges(machine))
    makespan = max((r[3] for r in trace.records), default=0.0)
    planned = float(bundle.manifest.get("planned_makespan_ns", 0))
    stats: dict[str, Any] = {"dram_min_speed": trace.stats["dram_min_speed"],
                             "slowdown": makespan / planned if planned else 1.0}
    return SimResult(makespan_ns=makespan, planned_makespan_ns=planned, events=events, sync_edges=edges,
                     memory_usage=_memory_usage(bundle, machine, trace, makespan), stats=stats)


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


def _memory_usage(bundle: "Bundle", machine: "Machine", trace: "Trace",
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
            if o.host:
                continue   # a host value occupies no simulated memory
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
    weights_end = len(bundle.constants)   # the read-only region stays reserved for the whole run
    for (memory, _), span in live.items():
        if memory == machine.dram and span[2] < weights_end:
            span[1] = makespan
    for b in bundle.outputs:   # outputs stay until the caller reads them: the latest storage at the binding
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
    return sum(2 if machine.programs[e][pc].kind in ("compute", "dma") else 1 for e, pc, _, _ in trace.records)
