"""``PreparedSimulation``: a bundle made ready to simulate many times, as an onnxruntime InferenceSession is.

Everything that depends only on the bundle is done once: decoding the programs, the timing run (DRAM
contention included) and its trace, the race check (a verdict kept from an earlier run of the same programs
and trace is reused: ``hetc.sim.races``), the SimResult (its events, sync edges and memory curves built at
their first read: ``hetc.sim.result.Deferred``), and, at the first functional run, the memories and every instruction bound to numpy views at its planned
offsets (``hetc.sim.functional``). ``run(inputs)`` then writes the inputs, replays the computes and DMAs in
the traced order on the bytes and reads the outputs: the same bytes a fresh ``simulate()`` gives, so a
wrong offset, a missing transfer or a missing semaphore still gives wrong numbers (or a race error, raised
when the simulation is prepared).
"""
from __future__ import annotations

import gc
import math
import threading
import time
from typing import Any

import numpy as np

from hetc.codegen.bundle import Bundle
from hetc.errors import SimulationError
from hetc.ir import np_dtype, parse_host_type
from hetc.ir.dtypes import from_storage, to_storage
from hetc.sim.engine import run as run_engine
from hetc.sim.functional import FunctionalReplay, KernelFn
from hetc.sim.host import HostHeap, conform
from hetc.sim.machine import Machine
from hetc.sim.races import check_races
from hetc.sim.result import SimResult, count_events, timing_result, with_run


class PreparedSimulation:
    """``PreparedSimulation(bundle).run(inputs)``: see the module docstring. Raises SimulationError when the
    bundle deadlocks or (``detect_races``) races. ``run`` may be called from several threads; runs of one
    object take turns (they share its memories)."""

    def __init__(self, bundle: Bundle, *, precision: str = "fp32", detect_races: bool = True,
                 contention: bool = True, kernel: KernelFn | None = None) -> None:
        t0 = time.perf_counter()
        self.bundle = bundle
        self.precision = precision
        self.detect_races = detect_races
        self.kernel = kernel
        collecting = gc.isenabled()
        gc.disable()   # tens of thousands of small objects: generational GC passes would dominate
        try:
            self.machine = Machine.from_bundle(bundle)
            t1 = time.perf_counter()
            self.trace = run_engine(self.machine, contention=contention)
            t2 = time.perf_counter()
            if detect_races:
                check_races(self.machine, self.trace.records)
            t3 = time.perf_counter()
            self.timing = timing_result(bundle, self.machine, self.trace)
            events = count_events(self.machine, self.trace)
        finally:
            if collecting:
                gc.enable()
        self._stats: dict[str, Any] = dict(
            engine_s=t2 - t1, race_check_s=t3 - t2, events=events, heap_events=self.trace.heap_events,
            events_per_s=events / (t2 - t1) if t2 > t1 else 0.0, instructions=self.machine.n_instructions,
            precision=precision)
        self._replay: FunctionalReplay | None = None
        self.contention = contention
        self.predicated = self.machine.predicated
        self._skip_timings: dict[frozenset[tuple[int, int]], SimResult] = {}
        self._gated: dict[str, list[tuple[int, int]]] | None = None   # gate -> its instructions, when first asked
        self._lock = threading.Lock()
        self.prepare_s = time.perf_counter() - t0   # grows by the functional preparation at the first run

    @property
    def replay(self) -> FunctionalReplay:
        """The functional half, built at the first functional run."""
        if self._replay is None:
            t0 = time.perf_counter()
            self._replay = FunctionalReplay(self.bundle, self.machine, self.trace.records,
                                            race_free=self.detect_races, kernel=self.kernel,
                                            precision=self.precision)
            self.prepare_s += time.perf_counter() - t0
        return self._replay

    def run(self, inputs: dict[str, np.ndarray] | None = None, functional: bool = True,
            probes: frozenset[str] = frozenset(), gates_off: frozenset[str] = frozenset()) -> SimResult:
        """One simulation. Functional mode (``inputs=None``: ``random_inputs(bundle, seed=0)``) computes the
        outputs, and the intermediate values named in ``probes`` as the computes saw them (``SimResult.probes``);
        timing-only mode returns the prepared timing result: the worst case, or the run in which the gates
        named in ``gates_off`` (value names, hetc.ir.predicates) turned their predicated instructions off."""
        t0 = time.perf_counter()
        outputs = probed = None
        prepared_here = 0.0
        if functional:
            raw, host_inputs = check_inputs(self.bundle, random_inputs(self.bundle) if inputs is None else inputs)
            with self._lock:
                if self._replay is None:
                    before = self.prepare_s
                    replay = self.replay
                    prepared_here = self.prepare_s - before
                else:
                    replay = self._replay
                t1 = time.perf_counter()
                probed = replay.run(lambda memories: _write(memories, raw, replay.heap, host_inputs),
                                    frozenset(probes))
                outputs = _read_outputs(self.bundle, replay.memories, replay.heap)
            functional_s = time.perf_counter() - t1
            timing = self._timing_skipping(frozenset(replay.off))
        else:
            functional_s = 0.0
            timing = self._timing_skipping(self._gated_by(gates_off)) if gates_off else self.timing
        stats = {**timing.stats, **self._stats, "wall_s": time.perf_counter() - t0,
                 "prepare_s": prepared_here, "functional_s": functional_s, "functional": functional,
                 "inputs": "random(seed=0)" if functional and inputs is None else "given"}
        if self.predicated:
            stats.update(worst_case_makespan_ns=self.timing.makespan_ns, skipped=timing.stats.get("skipped", 0),
                         gates_off=timing.stats.get("gates_off", []))
        return with_run(timing, outputs, stats, probed)

    def _gated_by(self, gates: frozenset[str]) -> frozenset[tuple[int, int]]:
        """The (engine, pc) of the predicated instructions that read one of ``gates`` (value names)."""
        if self._gated is None:
            self._gated = {}
            for e, program in enumerate(self.machine.programs):
                for pc, ins in enumerate(program):
                    if ins.kind in ("compute", "dma") and ins.when is not None:
                        self._gated.setdefault(ins.when.value, []).append((e, pc))
        return frozenset(at for gate in gates for at in self._gated.get(gate, ()))

    def _timing_skipping(self, off: frozenset[tuple[int, int]]) -> SimResult:
        """The timing of a run whose gates turned the predicated instructions at ``off`` off (the worst case,
        prepared once, when none); the last few kept, as routers repeat their choices."""
        if not off:
            return self.timing
        hit = self._skip_timings.get(off)
        if hit is None:
            machine = self.machine.skipping(off)
            trace = run_engine(machine, contention=self.contention)
            if self.detect_races:   # a skipped task waits for its gate alone (hetc.codegen.sync): checked here
                check_races(machine, trace.records)
            hit = timing_result(self.bundle, machine, trace)
            hit.stats["skipped"] = len(off)
            hit.stats["gates_off"] = sorted({machine.programs[e][pc].when.value for e, pc in off})
            if len(self._skip_timings) >= 8:
                self._skip_timings.pop(next(iter(self._skip_timings)))
            self._skip_timings[off] = hit
        return hit


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


def check_inputs(bundle: Bundle, inputs: dict[str, Any]
                 ) -> tuple[list[tuple[str, int, np.ndarray, tuple | None]], dict[str, Any]]:
    """(memory, offset, bytes as stored) of every bound input, and the objects of the host inputs (in the host
    heap's canonical form), after checking names, dtypes and shapes."""
    bound = {b["name"]: b for b in bundle.inputs}
    unknown = sorted(set(inputs) - set(bound))
    if unknown:
        raise SimulationError(f"unknown input(s) {unknown}; the bundle's inputs are {sorted(bound)}")
    out = []
    host_inputs: dict[str, Any] = {}
    for name, b in bound.items():
        if b.get("host"):   # a host value: the object goes to the host heap as it is
            if name not in inputs:
                raise SimulationError(f"missing input '{name}' (a {b['host']}); pass a value for it")
            host_inputs[name] = conform(inputs[name], parse_host_type(b["host"]), name)
            continue
        if b["buffer"] is None:
            continue   # an input nothing reads
        if name not in inputs:
            raise SimulationError(f"missing input '{name}' ({b['dtype']}{b['shape']}); pass a value for it")
        array = np.asarray(inputs[name])
        if tuple(array.shape) != tuple(b["shape"]) or array.dtype != np_dtype(b["dtype"]):
            raise SimulationError(f"input '{name}' is {array.dtype}{list(array.shape)} but the bundle was built "
                                  f"for {b['dtype']}{b['shape']}; convert it or rebuild with --shape")
        strides = b.get("strides")   # an input written in place into a slice of an output (a KV cache's past)
        out.append((b["memory"], b["offset"], to_storage(array, b["dtype"]),
                    None if strides is None else (tuple(b["shape"]), tuple(int(s) for s in strides))))
    return out, host_inputs


def _write(memories: dict[str, np.ndarray], raw: list[tuple[str, int, np.ndarray, tuple | None]], heap: HostHeap,
           host_inputs: dict[str, Any]) -> None:
    for memory, offset, data, layout in raw:
        if layout is None:
            memories[memory][offset:offset + data.size] = data
            continue
        shape, strides = layout      # scattered into the slice: element bytes at the given byte strides
        item = data.size // max(1, math.prod(shape))
        np.lib.stride_tricks.as_strided(memories[memory][offset:], (*shape, item),
                                        (*strides, 1))[...] = data.reshape(*shape, item)
    for name, obj in host_inputs.items():
        heap.put(name, obj)


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
