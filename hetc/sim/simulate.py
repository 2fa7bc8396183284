"""``simulate(bundle, inputs)``: run a bundle's programs on the modelled machine."""
from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from hetc.codegen.bundle import Bundle
from hetc.codegen.program import Compute, Dma, Signal, Wait
from hetc.errors import SimulationError
from hetc.ir import np_dtype
from hetc.sim.engine import Trace, run
from hetc.sim.functional import Executor, KernelFn, default_kernel
from hetc.sim.machine import Machine, allocate_memories, moves_data
from hetc.sim.races import check_races
from hetc.sim.result import SimEvent, SimResult, SyncEdge


def random_inputs(bundle: Bundle, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for every bound graph input (normal floats, small non-negative integers)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for b in bundle.inputs:
        if b["buffer"] is None:
            continue
        dtype, shape = np_dtype(b["dtype"]), tuple(b["shape"])
        if dtype.kind == "f":
            out[b["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            out[b["name"]] = rng.integers(0, 2, shape).astype(dtype)
        else:
            out[b["name"]] = rng.integers(0, 4, shape).astype(dtype)
    return out


def simulate(bundle: Bundle, inputs: dict[str, np.ndarray] | None = None, functional: bool = True,
             precision: str = "fp32", detect_races: bool = True, contention: bool = True,
             kernel: KernelFn | None = None) -> SimResult:
    """Simulate ``bundle``. Functional mode runs every kernel and DMA on real bytes and returns the outputs
    (``inputs=None`` uses ``random_inputs(bundle, seed=0)``); timing-only mode skips the data."""
    t0 = time.perf_counter()
    collecting = gc.isenabled()
    gc.disable()   # tens of thousands of small objects: generational GC passes would dominate the run
    try:
        machine = Machine.from_bundle(bundle)
        memories: dict[str, np.ndarray] = {}
        if functional:   # check the inputs before spending time on the run
            memories = allocate_memories(machine, bundle)
            _write_inputs(bundle, memories, random_inputs(bundle) if inputs is None else inputs)
        t1 = time.perf_counter()
        trace = run(machine, contention=contention)
        t2 = time.perf_counter()
        if detect_races:
            check_races(machine, trace.records)
        outputs = None
        if functional:
            Executor(machine, memories, kernel or default_kernel(), precision).replay(trace.records)
            outputs = _read_outputs(bundle, memories)
        result = _result(bundle, machine, trace, outputs)
    finally:
        if collecting:
            gc.enable()
    wall = time.perf_counter() - t0
    events = count_events(machine, trace)
    result.stats.update(wall_s=wall, engine_s=t2 - t1, events=events, heap_events=trace.heap_events,
                        events_per_s=events / (t2 - t1) if t2 > t1 else 0.0,
                        instructions=machine.n_instructions, functional=functional, precision=precision,
                        inputs="random(seed=0)" if functional and inputs is None else "given")
    return result


def count_events(machine: Machine, trace: Trace) -> int:
    """Simulated state changes: a start and an end per compute/DMA, one per signal and per wait."""
    return sum(2 if moves_data(machine.programs[e][pc]) else 1 for e, pc, _, _ in trace.records)


def _write_inputs(bundle: Bundle, memories: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> None:
    bound = {b["name"]: b for b in bundle.inputs}
    unknown = sorted(set(inputs) - set(bound))
    if unknown:
        raise SimulationError(f"unknown input(s) {unknown}; the bundle's inputs are {sorted(bound)}")
    for name, b in bound.items():
        if b["buffer"] is None:
            continue   # an input nothing reads
        if name not in inputs:
            raise SimulationError(f"missing input '{name}' ({b['dtype']}{b['shape']}); pass a value for it")
        array = np.asarray(inputs[name])
        if tuple(array.shape) != tuple(b["shape"]) or array.dtype != np_dtype(b["dtype"]):
            raise SimulationError(f"input '{name}' is {array.dtype}{list(array.shape)} but the bundle was built "
                                  f"for {b['dtype']}{b['shape']}; convert it or rebuild with --shape")
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        memories[b["memory"]][b["offset"]:b["offset"] + raw.size] = raw


def _read_outputs(bundle: Bundle, memories: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for b in bundle.outputs:
        if b["buffer"] is None:
            raise SimulationError(f"output '{b['name']}' has no DRAM buffer in the bundle; rebuild it")
        dtype = np_dtype(b["dtype"])
        raw = memories[b["memory"]][b["offset"]:b["offset"] + b["nbytes"]]
        out[b["name"]] = raw.view(dtype).reshape(b["shape"]).copy()
    return out


def _result(bundle: Bundle, machine: Machine, trace: Trace, outputs: dict[str, np.ndarray] | None) -> SimResult:
    events: list[SimEvent] = []
    for e, pc, start, end in trace.records:
        ins = machine.programs[e][pc]
        engine = machine.engines[e]
        if isinstance(ins, Compute):
            events.append(SimEvent(engine, pc, "compute", ins.name, start, end, ins.planned_start_ns,
                                   ins.planned_end_ns, ins.task,
                                   {"op": ins.op, "node": ins.node, "kernel": ins.kernel,
                                    "inputs": [list(o.shape) for o in ins.inputs if o is not None],
                                    "outputs": [list(o.shape) for o in ins.outputs],
                                    "bytes": sum(o.nbytes for o in ins.outputs)}))
        elif isinstance(ins, Dma):
            events.append(SimEvent(engine, pc, "dma", f"copy {ins.value} {ins.src.memory}->{ins.dst.memory}",
                                   start, end, ins.planned_start_ns, ins.planned_end_ns, ins.task,
                                   {"value": ins.value, "bytes": ins.bytes, "src": ins.src.memory,
                                    "dst": ins.dst.memory}))
        else:
            assert isinstance(ins, (Signal, Wait))
            kind = "wait" if isinstance(ins, Wait) else "signal"
            args = {"count": ins.count} if isinstance(ins, Wait) else {}
            events.append(SimEvent(engine, pc, kind, ins.sem, start, end, args=args))
    events.sort(key=lambda ev: (ev.start_ns, ev.engine, ev.index))
    edges = tuple(SyncEdge(s, machine.engines[se], sp, machine.engines[de], dp, t)
                  for s, se, sp, de, dp, t in trace.sync)
    makespan = max((ev.end_ns for ev in events), default=0.0)
    planned = float(bundle.manifest.get("planned_makespan_ns", 0))
    stats: dict[str, Any] = {"dram_min_speed": trace.stats["dram_min_speed"],
                             "slowdown": makespan / planned if planned else 1.0}
    return SimResult(makespan_ns=makespan, planned_makespan_ns=planned, events=tuple(events),
                     sync_edges=edges, memory_usage=_memory_usage(bundle, machine, events, makespan),
                     outputs=outputs, stats=stats)


def _memory_usage(bundle: Bundle, machine: Machine, events: list[SimEvent],
                  makespan: float) -> dict[str, tuple[tuple[float, int], ...]]:
    """Bytes in use per memory over simulated time: a storage is live from its first write (0 for inputs and
    weights) to its last access (the end for graph outputs)."""
    span: dict[tuple[str, str], list[float]] = {}
    size: dict[tuple[str, str], int] = {}
    for ev in events:
        if ev.kind not in ("compute", "dma"):
            continue
        ins = machine.programs[machine.engines.index(ev.engine)][ev.index]
        ops = ([(ins.src, False), (ins.dst, True)] if isinstance(ins, Dma)
               else [(o, False) for o in ins.inputs if o is not None] + [(o, True) for o in ins.outputs])
        for o, write in ops:
            key = (o.memory, o.storage or o.buffer)
            s = span.setdefault(key, [ev.start_ns if write else 0.0, ev.end_ns])
            s[0] = min(s[0], ev.start_ns if write else s[0])
            s[1] = max(s[1], ev.end_ns)
            size[key] = max(size.get(key, 0), o.nbytes)
    for b in bundle.outputs:
        if b["buffer"] is not None:
            for key in span:
                if key[0] == b["memory"] and key[1] == b["buffer"]:
                    span[key][1] = makespan
    steps: dict[str, list[tuple[float, int]]] = {}
    for (memory, _), (start, end) in span.items():
        steps.setdefault(memory, []).extend([(start, size[(memory, _)]), (end, -size[(memory, _)])])
    usage: dict[str, tuple[tuple[float, int], ...]] = {}
    for memory, deltas in sorted(steps.items()):
        deltas.sort(key=lambda d: (d[0], d[1]))
        level, points = 0, []
        for t, d in deltas:
            level += d
            if points and points[-1][0] == t:
                points[-1] = (t, level)
            else:
                points.append((t, level))
        usage[memory] = tuple(points)
    return usage
