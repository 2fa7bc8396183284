"""``simulate(bundle, inputs)``: run a bundle's programs on the modelled machine."""
from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from hetc.codegen.bundle import Bundle
from hetc.codegen.program import Compute, Dma, Instruction, Wait
from hetc.errors import SimulationError
from hetc.ir import np_dtype, parse_host_type
from hetc.ir.dtypes import from_storage, to_storage
from hetc.sim.engine import Trace, run
from hetc.sim.functional import Executor, KernelFn, default_kernel
from hetc.sim.host import HostHeap, conform
from hetc.sim.machine import Machine, allocate_memories, moves_data, release_memories
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
    memories: dict[str, np.ndarray] = {}
    heap = HostHeap()
    try:
        machine = Machine.from_bundle(bundle)
        if functional:   # check the inputs before spending time on the run
            memories = allocate_memories(machine, bundle)
            _write_inputs(bundle, memories, random_inputs(bundle) if inputs is None else inputs, heap)
        t1 = time.perf_counter()
        trace = run(machine, contention=contention)
        t2 = time.perf_counter()
        if detect_races:
            check_races(machine, trace.records)
        t3 = time.perf_counter()
        outputs = None
        if functional:
            executor = Executor(machine, memories, kernel or default_kernel(), precision, heap)
            executor.replay(trace.records, race_free=detect_races)   # check_races raised on any race
            outputs = _read_outputs(bundle, memories, heap)
        t4 = time.perf_counter()
        result = _result(bundle, machine, trace, outputs)
    finally:
        if memories:
            release_memories(memories)   # the next run of this bundle reuses them (zeroed again)
        if collecting:
            gc.enable()
    wall = time.perf_counter() - t0
    events = count_events(machine, trace)
    result.stats.update(wall_s=wall, engine_s=t2 - t1, race_check_s=t3 - t2, functional_s=t4 - t3,
                        events=events, heap_events=trace.heap_events,
                        events_per_s=events / (t2 - t1) if t2 > t1 else 0.0,
                        instructions=machine.n_instructions, functional=functional, precision=precision,
                        inputs="random(seed=0)" if functional and inputs is None else "given")
    return result


def count_events(machine: Machine, trace: Trace) -> int:
    """Simulated state changes: a start and an end per compute/DMA, one per signal and per wait."""
    return sum(2 if moves_data(machine.programs[e][pc]) else 1 for e, pc, _, _ in trace.records)


def _write_inputs(bundle: Bundle, memories: dict[str, np.ndarray], inputs: dict[str, Any],
                  heap: HostHeap) -> None:
    bound = {b["name"]: b for b in bundle.inputs}
    unknown = sorted(set(inputs) - set(bound))
    if unknown:
        raise SimulationError(f"unknown input(s) {unknown}; the bundle's inputs are {sorted(bound)}")
    for name, b in bound.items():
        if b.get("host"):   # a host value: the object goes to the host heap as it is
            if name not in inputs:
                raise SimulationError(f"missing input '{name}' (a {b['host']}); pass a value for it")
            heap.put(name, conform(inputs[name], parse_host_type(b["host"]), name))
            continue
        if b["buffer"] is None:
            continue   # an input nothing reads
        if name not in inputs:
            raise SimulationError(f"missing input '{name}' ({b['dtype']}{b['shape']}); pass a value for it")
        array = np.asarray(inputs[name])
        if tuple(array.shape) != tuple(b["shape"]) or array.dtype != np_dtype(b["dtype"]):
            raise SimulationError(f"input '{name}' is {array.dtype}{list(array.shape)} but the bundle was built "
                                  f"for {b['dtype']}{b['shape']}; convert it or rebuild with --shape")
        raw = to_storage(array, b["dtype"])
        memories[b["memory"]][b["offset"]:b["offset"] + raw.size] = raw


def _read_outputs(bundle: Bundle, memories: dict[str, np.ndarray], heap: HostHeap) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b in bundle.outputs:
        if b.get("host"):
            out[b["name"]] = heap.get(b["name"])
            continue
        if b["buffer"] is None:
            raise SimulationError(f"output '{b['name']}' has no DRAM buffer in the bundle; rebuild it")
        raw = memories[b["memory"]][b["offset"]:b["offset"] + b["nbytes"]]
        out[b["name"]] = from_storage(raw, b["dtype"], tuple(b["shape"])).copy()
    return out


def _result(bundle: Bundle, machine: Machine, trace: Trace, outputs: dict[str, np.ndarray] | None) -> SimResult:
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
                     memory_usage=_memory_usage(bundle, machine, trace, makespan), outputs=outputs, stats=stats)


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


def _memory_usage(bundle: Bundle, machine: Machine, trace: Trace,
                  makespan: float) -> dict[str, tuple[tuple[float, int], ...]]:
    """Bytes in use per memory over simulated time: a storage is live from its first write (0 for inputs and
    weights) to its last access (the end of the run for graph outputs and the read-only weights region)."""
    live: dict[tuple[str, str], list] = {}   # (memory, storage) -> [first write, last access, bytes, offset]
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
                live[key] = [start if write else 0.0, end, o.nbytes, o.offset]
                continue
            if write and start < span[0]:
                span[0] = start
            if end > span[1]:
                span[1] = end
            if o.nbytes > span[2]:
                span[2] = o.nbytes
    weights_end = len(bundle.constants)   # the read-only region stays reserved for the whole run
    for (memory, _), span in live.items():
        if memory == machine.dram and span[3] < weights_end:
            span[1] = makespan
    for b in bundle.outputs:   # outputs stay until the caller reads them: the latest storage at the binding
        at = [span for (memory, _), span in live.items() if memory == b["memory"] and span[3] == b["offset"]]
        if at:
            max(at, key=lambda span: span[0])[1] = makespan
    deltas: dict[str, list[tuple[float, int]]] = {}
    for (memory, _), (start, end, size, _offset) in live.items():
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
