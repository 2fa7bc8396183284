"""Functional execution: kernels and DMAs on real bytes, replayed in the order the timing run traced.

An instruction reads its operands when it starts and writes its results when it ends, so an instruction
that starts too early (a missing semaphore) reads stale bytes and one whose output is overwritten before its
consumer reads it (a wrong offset) produces wrong numbers downstream.

``FunctionalReplay`` does everything that does not depend on the data once: it allocates the memories,
decodes attributes, makes the numpy views at the planned offsets, binds each compute to its kernel (and the
CPU path's session) and each DMA to a copy between two views, and works out which bytes a run reads before
it writes them. ``run(write_inputs)`` then only writes the inputs, calls the bound steps in order and reads
the outputs.

Between runs the memories keep their bytes, but every byte a run reads is either written earlier in the same
run, part of the constants image (restored when an instruction writes into it) or zeroed when the run starts
(``resets``: empty for a sound plan): a run sees exactly what a run on freshly allocated memories would.

A predicated instruction (hetc.ir.predicates) reads its gate when its turn comes and, if it is all zero, does
not run (a zero-filling compute writes zeros instead); ``off`` collects them for the run's timing. The order
stays the worst case's: skipping an instruction changes when the others run, not which bytes they see.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hetc.codegen.attrs import decode_attrs
from hetc.codegen.bundle import Bundle
from hetc.codegen.program import Compute, Dma, Operand
from hetc.errors import SimulationError
from hetc.ir import np_dtype
from hetc.ir.dtypes import from_storage, itemsize, to_storage
from hetc.sim import host
from hetc.sim.machine import Machine, allocate_memories, memory_extents, moves_data

KernelFn = Callable[..., list[np.ndarray]]
Span = tuple[str, int, int]   # memory, first byte, end byte


def view(memories: dict[str, np.ndarray], o: Operand) -> np.ndarray:
    """The operand as a numpy array over the memory's bytes (no copy; a copy for sub-byte types). A strided
    operand (a region of a tensor, hetc.ir.tiles) is viewed with its byte strides, still without a copy."""
    if o.immediate is not None:   # carried by the instruction (hetc.ir.immediates)
        return np.array(o.immediate, dtype=np_dtype(o.dtype)).reshape(o.shape)
    if o.dtype == "string":
        raise SimulationError(f"value '{o.value}' is a string tensor bound to device memory, where it has no byte "
                              "layout; string tensors are host values (rebuild the bundle with this hetc)")
    if o.dense:
        raw = memories[o.memory][o.offset:o.offset + o.nbytes]
        return from_storage(raw, o.dtype, o.shape)
    if not _whole_bytes(o):
        raise SimulationError(f"value '{o.value}' is a strided region of a {o.dtype} tensor; sub-byte elements "
                              "have no byte strides (tile such tensors along their outermost axis only)")
    memory = memories[o.memory]
    return np.ndarray(o.shape, dtype=np_dtype(o.dtype), buffer=memory, offset=o.offset, strides=o.strides)


def _runs(o: Operand) -> list[Span]:
    """The byte runs of an operand, as spans (exact for a strided one: its gaps are not touched)."""
    return [(o.memory, lo, hi) for lo, hi in o.runs()]


def _whole_bytes(o: Operand) -> bool:
    """Whether ``view`` of the operand is a view of memory (not an unpacked copy of sub-byte elements)."""
    return o.dtype != "string" and itemsize(o.dtype) >= 1


@dataclass
class Step:
    """One compute or DMA bound to the memories. ``run`` reads, computes and writes at once (the replay of a
    race-free trace); ``read`` (at the start: returns the staged results, detached from memory) and
    ``write`` (at the end) are the two halves for the read-at-start, write-at-end replay."""

    engine: int
    pc: int
    run: Callable[[], None]
    read: Callable[[], Any]
    write: Callable[[Any], None]
    reads: tuple[Span, ...]
    writes: tuple[Span, ...]


class FunctionalReplay:
    """The functional half of a prepared simulation (see the module docstring)."""

    def __init__(self, bundle: Bundle, machine: Machine, records: list[tuple[int, int, float, float]],
                 race_free: bool, kernel: KernelFn | None, precision: str) -> None:
        self.machine = machine
        self.kernel = kernel
        self.precision = precision
        extent, self.constants_intact = memory_extents(machine, bundle)
        self.memories = allocate_memories(machine, bundle, extent)
        self.heap = host.HostHeap()   # host values (hetc.sim.host): objects, not bytes
        self.off: set[tuple[int, int]] = set()   # predicated (engine, pc) the last run's gates turned off
        self._image = np.frombuffer(bundle.constants, dtype=np.uint8)
        programs = machine.programs
        moving = [(start, end, e, pc) for e, pc, start, end in records if moves_data(programs[e][pc])]
        # Once the race detector has passed, no other engine touches an instruction's bytes while it runs,
        # so running each one whole at its start gives the same bytes and saves staging its results.
        self.whole = race_free and all(end > start for start, end, _, _ in moving)
        moving.sort()
        self.steps = [self.bind(e, pc, programs[e][pc]) for _, _, e, pc in moving]
        if self.whole:
            self.order = [(2, k) for k in range(len(self.steps))]
        else:
            # At one instant writes of instructions that end come before reads of instructions that start
            # (the timing engine's order), except that an instruction of no duration starts before it ends.
            moves = []
            for k, (start, end, e, pc) in enumerate(moving):
                moves.append((start, 1, e, pc, k))
                moves.append((end, 0 if end > start else 2, e, pc, k))
            moves.sort()
            self.order = [(phase & 1, k) for _, phase, _, _, k in moves]   # 1: read, 0: write
        self._calls = [self.steps[k].run for _, k in self.order] if self.whole else []
        self.input_spans: list[Span] = [(b["memory"], b["offset"], b["offset"] + b["nbytes"])
                                        for b in bundle.inputs if b["buffer"] is not None]
        self.output_spans: list[Span] = [(b["memory"], b["offset"], b["offset"] + b["nbytes"])
                                         for b in bundle.outputs if b["buffer"] is not None]
        self.resets = self._resets(len(bundle.constants))

    # ------------------------------------------------------------------ running
    def run(self, write_inputs: Callable[[dict[str, np.ndarray]], None], probes: frozenset[str] = frozenset()
            ) -> dict[str, np.ndarray]:
        """One run: reset what the run would otherwise read stale, write the inputs (``write_inputs`` gets the
        memories), replay every compute and DMA. The caller reads the outputs from ``memories``. Returns the
        probed values: each value named in ``probes`` as a compute read or wrote it (the largest operand of
        that name: a whole tensor rather than a tile of it), copied at that moment, since the plan may reuse
        its bytes later (what hetc.validate re-anchors on)."""
        memories = self.memories
        probed: dict[str, np.ndarray] = {}
        calls, steps = self._calls, self.steps
        if probes:
            calls, steps = self._probing(probes, probed)
        self.heap.values.clear()
        self.off.clear()
        for reset in self.resets:
            reset.fill(0)
        if not self.constants_intact:
            memories[self.machine.dram][:self._image.size] = self._image
        write_inputs(memories)
        k = 0
        try:
            with np.errstate(all="ignore"):   # inf/nan results are legitimate ONNX outputs, as in onnxruntime
                if self.whole:
                    for k, call in enumerate(calls):
                        call()
                else:
                    staged: dict[int, Any] = {}
                    for k, (is_read, index) in enumerate(self.order):
                        if is_read:
                            staged[index] = steps[index].read()
                        else:
                            steps[index].write(staged.pop(index))
        except SimulationError:
            raise
        except Exception as exc:  # a kernel failure is reported against the instruction that ran it
            step = self.steps[self.order[k][1]]
            ins = self.machine.programs[step.engine][step.pc]
            raise SimulationError(f"kernel {getattr(ins, 'kernel', 'dma')} failed on "
                                  f"{self.machine.describe(step.engine, step.pc)}: {type(exc).__name__}: {exc}"
                                  ) from exc
        return probed

    def _probing(self, probes: frozenset[str], probed: dict[str, np.ndarray]
                 ) -> tuple[list[Callable[[], None]], list[Step]]:
        """The calls (whole replay) and steps (staged replay) with every compute that reads or writes a probed
        value wrapped to copy it into ``probed``: inputs before the compute, outputs after it."""
        memories = self.memories

        def keep(operands: tuple[Operand | None, ...]) -> None:
            for o in operands:
                if o is not None and o.value in probes and o.has_bytes and o.dtype != "string":
                    held = probed.get(o.value)
                    if held is None or held.size <= int(np.prod(o.shape, dtype=np.int64)):
                        probed[o.value] = np.array(view(memories, o))

        calls, steps = list(self._calls), list(self.steps)
        for k, step in enumerate(self.steps):
            ins = self.machine.programs[step.engine][step.pc]
            if not isinstance(ins, Compute) or not any(
                    o is not None and o.value in probes for o in (*ins.inputs, *ins.outputs)):
                continue

            def run(step: Step = step, ins: Compute = ins) -> None:
                keep(ins.inputs)
                step.run()
                keep(ins.outputs)

            def read(step: Step = step, ins: Compute = ins) -> Any:
                keep(ins.inputs)
                return step.read()

            def write(results: Any, step: Step = step, ins: Compute = ins) -> None:
                step.write(results)
                keep(ins.outputs)
            steps[k] = Step(step.engine, step.pc, run, read, write, step.reads, step.writes)
        if self.whole:
            calls = [steps[k].run for _, k in self.order]
        return calls, steps

    # ------------------------------------------------------------------ binding
    def bind(self, e: int, pc: int, ins: Compute | Dma) -> Step:
        """The one place where an instruction becomes bound callables over the memories."""
        if isinstance(ins, Dma):
            step = self._bind_dma(e, pc, ins)
        else:
            reads = tuple(s for o in ins.inputs if o is not None and o.has_bytes for s in _runs(o))
            writes = tuple(s for o in ins.outputs if not o.host for s in _runs(o))
            try:
                run, read, write = (self._bind_host(e, pc, ins) if host.touches_host(ins)
                                    else self._bind_compute(e, pc, ins))
            except SimulationError as error:   # raised when the replay reaches the instruction, as a kernel's
                def fail(*_: Any, error: SimulationError = error) -> Any:
                    raise error
                run, read, write = fail, fail, fail
            step = Step(e, pc, run, read, write, reads, writes)
        return step if ins.when is None else self._predicated(step, ins)

    def _predicated(self, step: Step, ins: Compute | Dma) -> Step:
        """``step`` run only when its gate has a nonzero element (hetc.ir.predicates); otherwise it does
        nothing, or writes zeros to its outputs (a compute's ``zero_fill``), and its (engine, pc) joins
        ``off`` for the timing of the run."""
        assert ins.when is not None
        gate, where, off = view(self.memories, ins.when), (step.engine, step.pc), self.off
        zeros = ([(self._sink(o), np.zeros(o.shape, np_dtype(o.dtype))) for o in ins.outputs]
                 if isinstance(ins, Compute) and ins.zero_fill else [])

        def taken() -> bool:
            if gate.any():
                return True
            off.add(where)
            return False

        def fill() -> None:
            for put, zero in zeros:
                put(zero)

        def run() -> None:
            if taken():
                step.run()
            else:
                fill()

        def read() -> Any:
            return (True, step.read()) if taken() else (False, None)

        def write(staged: Any) -> None:
            if staged[0]:
                step.write(staged[1])
            else:
                fill()
        return Step(step.engine, step.pc, run, read, write, step.reads + tuple(_runs(ins.when)), step.writes)

    def _bind_dma(self, e: int, pc: int, ins: Dma) -> Step:
        src, dst, n = ins.src, ins.dst, ins.bytes
        copyto = np.copyto
        if not (src.dense and dst.dense):
            # A strided descriptor: the source region's elements land in the destination's, shape for shape.
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise SimulationError(f"strided dma {self.machine.describe(e, pc)} copies {src.dtype}"
                                      f"{list(src.shape)} to {dst.dtype}{list(dst.shape)}; shapes must match")
            source, target = view(self.memories, src), view(self.memories, dst)

            def run_strided() -> None:
                copyto(target, source)

            def write_strided(data: np.ndarray) -> None:
                copyto(target, data)
            return Step(e, pc, run_strided, source.copy, write_strided, tuple(_runs(src)), tuple(_runs(dst)))
        source = self.memories[src.memory][src.offset:src.offset + n]
        target = self.memories[dst.memory][dst.offset:dst.offset + n]

        def run() -> None:
            copyto(target, source)   # (numpy stages the copy itself when the two overlap in one memory)

        def write(data: np.ndarray) -> None:
            copyto(target, data)
        return Step(e, pc, run, source.copy, write, ((src.memory, src.offset, src.offset + n),),
                    ((dst.memory, dst.offset, dst.offset + n),))

    def _bind_compute(self, e: int, pc: int, ins: Compute) -> tuple[Callable, Callable, Callable]:
        machine, memories = self.machine, self.memories
        kind = machine.device_kind[machine.engines[e]]
        attrs = decode_attrs(ins.attrs)
        specs = [(o.dtype, o.shape) for o in ins.outputs]
        inputs: list[np.ndarray | None] = []
        for o in ins.inputs:
            x = None if o is None else view(memories, o)
            if x is not None:
                x.flags.writeable = False
            inputs.append(x)
        sinks = [self._sink(o) for o in ins.outputs]
        plain = all(o is None or _whole_bytes(o) for o in ins.inputs)
        if self.kernel is None and plain:
            from hetc.sim.kernels.dispatch import bind_kernel
            out = None
            if self.whole and (self.precision == "fp32" or kind == "cpu"):
                # Kernels may compute straight into an output's bytes when they overlap no input's (with
                # fp16 the NPU's results are rounded after the kernel, so not there).
                out = [view(memories, o) if _whole_bytes(o) and o.dense and not any(
                    x is not None and np.may_share_memory(view(memories, o), x) for x in inputs) else None
                    for o in ins.outputs]
            compute = bind_kernel(kind, ins.op, ins.domain, attrs, inputs, specs, machine.opset,
                                  precision=self.precision, out=out)
        else:
            compute = self._generic(e, pc, ins, kind, attrs, specs)
        if len(sinks) == 1:
            (sink,) = sinks

            def run() -> None:
                sink(compute()[0])
        else:
            def run() -> None:
                for put, result in zip(sinks, compute()):
                    put(result)
        memory_arrays = tuple(memories.values())

        def read() -> list[np.ndarray]:
            # Results are written at the end: detach them from device memory now.
            return [r.copy() if any(np.may_share_memory(r, m) for m in memory_arrays) else r for r in compute()]

        def write(results: list[np.ndarray]) -> None:
            for put, result in zip(sinks, results):
                put(result)
        return run, read, write

    def _bind_host(self, e: int, pc: int, ins: Compute) -> tuple[Callable, Callable, Callable]:
        """A compute with host operands: run through hetc.sim.host on the heap and the device bytes."""
        attrs = decode_attrs(ins.attrs)

        def read() -> list[tuple[Operand, Any]]:
            return host.run_compute(self, e, pc, ins, attrs)

        def write(pending: list[tuple[Operand, Any]]) -> None:
            for o, data in pending:
                if o.host:
                    self.heap.put(o.value, data)
                elif not o.dense:   # a region of a tensor: element by element through its strides
                    np.copyto(view(self.memories, o), data.reshape(o.shape))
                else:   # the result as stored (detached from memory by run_compute), as bytes
                    raw = data.reshape(-1).view(np.uint8)
                    self.memories[o.memory][o.offset:o.offset + raw.size] = raw

        def run() -> None:
            write(read())
        return run, read, write

    def _sink(self, o: Operand) -> Callable[[np.ndarray], None]:
        """Writes a result (declared dtype and shape) into the operand's bytes."""
        memory = self.memories[o.memory]
        target = view(self.memories, o)   # (raises for a string tensor, which has no byte layout)
        if _whole_bytes(o):
            copyto = np.copyto

            def put(result: np.ndarray) -> None:
                if result is not target:
                    copyto(target, result)   # (a no-op when the result is the very bytes: an in-place Reshape)
            return put

        def put_packed(result: np.ndarray) -> None:
            raw = to_storage(result, o.dtype)   # the bytes as laid out in memory (sub-byte types packed)
            memory[o.offset:o.offset + raw.size] = raw
        return put_packed

    def _generic(self, e: int, pc: int, ins: Compute, kind: str, attrs: dict[str, Any],
                 specs: list[tuple[str, tuple[int, ...]]]) -> Callable[[], list[np.ndarray]]:
        """A compute through a caller's kernel function (or sub-byte inputs): operands read per run and
        every result checked against the plan."""
        kernel = self.kernel or default_kernel()
        machine, memories, precision = self.machine, self.memories, self.precision
        operands = ins.inputs

        def compute() -> list[np.ndarray]:
            inputs = []
            for o in operands:
                x = None if o is None else view(memories, o)
                if x is not None:
                    x.flags.writeable = False
                inputs.append(x)
            results = kernel(kind, ins.op, ins.domain, attrs, inputs, specs, machine.opset, precision=precision)
            if len(results) != len(ins.outputs):
                raise SimulationError(f"kernel {ins.kernel} returned {len(results)} outputs for "
                                      f"{machine.describe(e, pc)}, which has {len(ins.outputs)}")
            checked = []
            for o, r in zip(ins.outputs, results):
                r = np.asarray(r)
                if tuple(r.shape) != o.shape or r.dtype != np_dtype(o.dtype):
                    raise SimulationError(f"kernel {ins.kernel} returned {r.dtype}{list(r.shape)} for output "
                                          f"'{o.value}' of {machine.describe(e, pc)}, planned "
                                          f"{o.dtype}{list(o.shape)}")
                checked.append(r)
            return checked
        return compute

    # ------------------------------------------------------------------ what a run must reset
    def _resets(self, constants: int) -> list[np.ndarray]:
        """Views of the bytes some run reads before it writes them (in the replay order): zeroed at the start
        of every run, they read as zeros as on fresh memories, never as a previous run's values."""
        written: dict[str, _Intervals] = {}
        stale: dict[str, _Intervals] = {}

        def reading(spans: tuple[Span, ...] | list[Span]) -> None:
            for memory, lo, hi in spans:
                for gap in written.setdefault(memory, _Intervals()).gaps(lo, hi):
                    stale.setdefault(memory, _Intervals()).add(*gap)

        def writing(spans: tuple[Span, ...] | list[Span]) -> None:
            for memory, lo, hi in spans:
                written.setdefault(memory, _Intervals()).add(lo, hi)

        writing([(self.machine.dram, 0, constants)])
        writing(self.input_spans)
        for phase, k in self.order:
            step = self.steps[k]
            if phase:      # a read, or a whole run
                reading(step.reads)
            if phase != 1:  # a write, or a whole run
                writing(step.writes)
        reading(self.output_spans)
        return [self.memories[memory][lo:hi] for memory, intervals in sorted(stale.items())
                for lo, hi in intervals.spans()]


class _Intervals:
    """Disjoint, sorted, non-touching [lo, hi) byte ranges."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def gaps(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of [lo, hi) no range covers."""
        out = []
        i = bisect_right(self.ends, lo)
        at = lo
        while i < len(self.starts) and self.starts[i] < hi:
            if self.starts[i] > at:
                out.append((at, self.starts[i]))
            at = max(at, self.ends[i])
            i += 1
        if at < hi:
            out.append((at, hi))
        return out

    def add(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        i = bisect_left(self.ends, lo)        # the first range that ends at or after lo ...
        j = bisect_right(self.starts, hi)     # ... up to the last that starts at or before hi: merged
        if i < j:
            lo, hi = min(lo, self.starts[i]), max(hi, self.ends[j - 1])
        self.starts[i:j] = [lo]
        self.ends[i:j] = [hi]

    def spans(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends))


def default_kernel() -> KernelFn:
    from hetc.sim.kernels import run_kernel
    return run_kernel
