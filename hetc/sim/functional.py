"""Functional execution: kernels and DMAs on real bytes.

An instruction reads its operands when it starts and writes its results when it ends, so an instruction
that starts too early (a missing semaphore) reads stale bytes and one whose output is overwritten before its
consumer reads it (a wrong offset) produces wrong numbers downstream.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hetc.codegen.attrs import decode_attrs
from hetc.codegen.program import Compute, Dma, Operand
from hetc.errors import SimulationError
from hetc.ir import np_dtype
from hetc.ir.dtypes import from_storage, to_storage
from hetc.sim import host
from hetc.sim.machine import Machine, moves_data

KernelFn = Callable[..., list[np.ndarray]]

_DECODED_LIMIT = 8192
# id(instruction) -> (instruction, its decoded attributes), across runs: the same dict object then reaches
# the kernels every run, which lets the CPU path find its cached session by the dict's identity. Holding the
# instruction keeps its id from being reused while the entry lives.
_decoded: dict[int, tuple[Compute, dict[str, Any]]] = {}


def _decoded_attrs(ins: Compute) -> dict[str, Any]:
    entry = _decoded.get(id(ins))
    if entry is not None and entry[0] is ins:
        return entry[1]
    if len(_decoded) >= _DECODED_LIMIT:
        _decoded.pop(next(iter(_decoded)))   # the oldest entry
    attrs = decode_attrs(ins.attrs)
    _decoded[id(ins)] = (ins, attrs)
    return attrs


def view(memories: dict[str, np.ndarray], o: Operand) -> np.ndarray:
    """The operand as a numpy array over the memory's bytes (no copy)."""
    if o.dtype == "string":
        raise SimulationError(f"value '{o.value}' is a string tensor, which has no byte layout in device memory; "
                              "the functional simulator cannot run it (use functional=False)")
    raw = memories[o.memory][o.offset:o.offset + o.nbytes]
    return from_storage(raw, o.dtype, o.shape)


class Executor:
    """Runs each step's data movement: reads at start, writes at end."""

    def __init__(self, machine: Machine, memories: dict[str, np.ndarray], kernel: KernelFn,
                 precision: str, heap: host.HostHeap | None = None) -> None:
        self.machine = machine
        self.memories = memories
        self.kernel = kernel
        self.precision = precision
        self.heap = heap if heap is not None else host.HostHeap()   # host values (hetc.sim.host)
        self.pending: dict[int, list[tuple[Operand, np.ndarray]]] = {}

    def replay(self, records: list[tuple[int, int, float, float]], race_free: bool = False) -> None:
        """Execute the trace's computes and DMAs in time order: at one instant, writes of instructions that
        end come before reads of instructions that start (the timing engine's ordering).

        ``race_free`` says the race detector passed on these records: then no other engine touches an
        instruction's bytes while it runs, so running each one whole at its start gives the same bytes and
        saves a staging copy per DMA (it copies memory to memory directly)."""
        programs = self.machine.programs
        moving = [(start, end, e, pc) for e, pc, start, end in records if moves_data(programs[e][pc])]
        if race_free and all(end > start for start, end, _, _ in moving):
            moving.sort()
            for _, _, e, pc in moving:
                ins = programs[e][pc]
                if isinstance(ins, Compute):
                    self.pending[e] = self._compute(e, pc, ins)
                    self.finish(e)
                else:
                    self._copy(ins)  # type: ignore[arg-type]
            return
        moves = []
        for start, end, e, pc in moving:
            moves.append((start, 1, e, pc))
            moves.append((end, 0, e, pc))
        moves.sort()
        for _, is_start, e, pc in moves:
            if is_start:
                self.start(e, pc)
            else:
                self.finish(e)

    def start(self, e: int, pc: int) -> None:
        ins = self.machine.programs[e][pc]
        if isinstance(ins, Compute):
            self.pending[e] = self._compute(e, pc, ins)
        else:
            src, dst = ins.src, ins.dst  # type: ignore[union-attr]
            n = ins.bytes  # type: ignore[union-attr]
            data = self.memories[src.memory][src.offset:src.offset + n].copy()
            self.pending[e] = [(dst, data)]

    def _copy(self, ins: Dma) -> None:
        src, dst, n = ins.src, ins.dst, ins.bytes
        # (numpy stages the copy itself when source and destination overlap in one memory.)
        self.memories[dst.memory][dst.offset:dst.offset + n] = self.memories[src.memory][src.offset:src.offset + n]

    def finish(self, e: int) -> None:
        for o, data in self.pending.pop(e):
            if o.host:   # a host value: an object for the heap, not bytes
                self.heap.put(o.value, data)
                continue
            raw = data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 or data.ndim != 1 else data
            self.memories[o.memory][o.offset:o.offset + raw.size] = raw

    def _compute(self, e: int, pc: int, ins: Compute) -> list[tuple[Operand, np.ndarray]]:
        attrs = _decoded_attrs(ins)
        if host.touches_host(ins):   # operands fetched from / stored to the host heap
            return host.run_compute(self, e, pc, ins, attrs)
        inputs = []
        for o in ins.inputs:
            if o is None:
                inputs.append(None)
                continue
            a = view(self.memories, o)
            a.flags.writeable = False
            inputs.append(a)
        kind = self.machine.device_kind[self.machine.engines[e]]
        try:
            results = self.kernel(kind, ins.op, ins.domain, attrs, inputs,
                                  [(o.dtype, o.shape) for o in ins.outputs], self.machine.opset,
                                  precision=self.precision)
        except SimulationError:
            raise
        except Exception as exc:  # a kernel failure is reported against the instruction that ran it
            raise SimulationError(f"kernel {ins.kernel} failed on {self.machine.describe(e, pc)}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if len(results) != len(ins.outputs):
            raise SimulationError(f"kernel {ins.kernel} returned {len(results)} outputs for "
                                  f"{self.machine.describe(e, pc)}, which has {len(ins.outputs)}")
        out = []
        for o, r in zip(ins.outputs, results):
            r = np.asarray(r)
            if tuple(r.shape) != o.shape or r.dtype != np_dtype(o.dtype):
                raise SimulationError(f"kernel {ins.kernel} returned {r.dtype}{list(r.shape)} for output "
                                      f"'{o.value}' of {self.machine.describe(e, pc)}, planned "
                                      f"{o.dtype}{list(o.shape)}")
            # Results are written at the end: detach them from device memory now.
            stored = to_storage(r, o.dtype)   # the bytes as laid out in memory (sub-byte types packed)
            out.append((o, stored.copy() if np.may_share_memory(stored, self.memories[o.memory]) else stored))
        return out


def default_kernel() -> KernelFn:
    from hetc.sim.kernels import run_kernel
    return run_kernel
