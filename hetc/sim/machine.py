"""The machine a bundle runs on: its engines' programs, semaphores, DRAM bandwidth and memory sizes, and
(functional mode) one byte array per memory.

The event loop reads the programs' instruction objects directly (``kind``, ``duration_ns``, ``dram_bytes``,
``sem``, ``count``): decoding them into another form would cost as much as simulating them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hetc.codegen.bundle import Bundle
from hetc.codegen.program import Compute, Dma, Instruction, Operand, Wait


@dataclass
class Machine:
    engines: list[str]
    programs: list[tuple[Instruction, ...]]   # per engine, in program order
    sync_ns: float
    dram: str
    dram_bandwidth: float                     # bytes/ns shared by every DRAM user
    device_kind: dict[str, str]               # engine -> "cpu" | "npu" | "dsp" | "dma"
    opset: dict[str, int]
    memory_extent: dict[str, int]             # bytes of each memory the plan uses

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> "Machine":
        machine = bundle.manifest["machine"]
        engines = list(bundle.programs)
        dram = machine["dram"]
        extent = {name: int(m["extent"]) for name, m in machine["memories"].items()}
        extent[dram] = max(extent.get(dram, 0), len(bundle.constants))
        return cls(engines=engines, programs=[bundle.programs[e].instructions for e in engines],
                   sync_ns=float(machine["sync_ns"]), dram=dram,
                   dram_bandwidth=float(machine["memories"][dram]["bandwidth"]),
                   device_kind={n: p.kind for n, p in bundle.programs.items()},
                   opset=dict(bundle.manifest["opset"]), memory_extent=extent)

    @property
    def predicated(self) -> bool:
        """Whether some compute or DMA is predicated (hetc.ir.predicates): its timing depends on the data."""
        return any(getattr(ins, "when", None) is not None for program in self.programs for ins in program)

    def skipping(self, off: frozenset[tuple[int, int]]) -> "Machine":
        """This machine with the predicated instructions at ``off`` ((engine, pc) pairs, their gates all zero)
        as they run then: a DMA copies nothing, a compute takes its ``skip_ns`` (a zero fill of its outputs,
        or nothing; either reads only its gate), and the predicated waits right before either wait for
        nothing."""
        programs = [list(p) for p in self.programs]
        for e, pc in off:
            k = pc - 1
            while k >= 0 and isinstance(programs[e][k], Wait) and programs[e][k].when is not None:
                programs[e][k] = replace(programs[e][k], count=0)
                k -= 1
            ins = programs[e][pc]
            if isinstance(ins, Dma):
                programs[e][pc] = replace(ins, duration_ns=0, dram_bytes=0)
            else:
                outputs = ins.outputs if ins.zero_fill else ()
                programs[e][pc] = replace(ins, duration_ns=ins.skip_ns, inputs=(None,) * len(ins.inputs),
                                          outputs=outputs,
                                          dram_bytes=sum(o.nbytes for o in outputs if o.memory == self.dram))
        return replace(self, programs=[tuple(p) for p in programs])

    @property
    def n_instructions(self) -> int:
        return sum(len(p) for p in self.programs)

    def signaller(self, sem: str) -> str:
        """The engine whose program signals ``sem`` (for messages; not on the hot path)."""
        for name, program in zip(self.engines, self.programs):
            if any(ins.kind == "signal" and ins.sem == sem for ins in program):  # type: ignore[union-attr]
                return name
        return "no engine"

    def describe(self, engine: int, pc: int) -> str:
        """``engine[pc] instruction`` for error messages."""
        return f"{self.engines[engine]}[{pc}] {self.programs[engine][pc].asm().split('  ;')[0]}"


def moves_data(ins: Instruction) -> bool:
    return ins.kind == "compute" or ins.kind == "dma"


def operand_accesses(ins: Compute | Dma) -> list[tuple[Operand, bool]]:
    """(operand, writes?) of each operand of a compute or DMA that has bytes. Host values (hetc.ir.host) have
    none: only the CPU touches them, in program order, so they take no part in races or extents; nor have
    immediates (hetc.ir.immediates), carried by the instruction."""
    gate = [(ins.when, False)] if ins.when is not None else []   # a predicated one reads its gate to decide
    if isinstance(ins, Dma):
        return [(ins.src, False), (ins.dst, True), *gate]
    out = [(o, False) for o in ins.inputs if o is not None and o.has_bytes] + gate
    # An in-place Reshape-like output rewrites identical bytes: a read, not a write, for race purposes.
    out += [(o, k not in ins.inplace) for k, o in enumerate(ins.outputs) if not o.host]
    return out


def accesses(ins: Compute | Dma) -> list[tuple[str, int, int, bool]]:
    """(memory, first byte, end byte, writes?) of each byte run of each operand of a compute or DMA: one per
    dense operand, the exact runs of a strided one (a row band of an NCHW tensor is one run per channel, so
    two tiles writing interleaved rows of one tensor touch disjoint bytes)."""
    return [(o.memory, lo, hi, write) for o, write in operand_accesses(ins) for lo, hi in o.runs()]


def memory_extents(machine: Machine, bundle: Bundle) -> tuple[dict[str, int], bool]:
    """Bytes to allocate per memory (the plan's extents, widened by any operand that lies beyond them) and
    whether the constants image stays intact (no instruction writes into it)."""
    extent = dict(machine.memory_extent)
    image_size = len(bundle.constants)
    intact = True
    for program in machine.programs:
        for ins in program:
            if moves_data(ins):
                for memory, lo, hi, write in accesses(ins):  # type: ignore[arg-type]
                    extent[memory] = max(extent.get(memory, 0), hi)
                    if write and lo < image_size and memory == machine.dram:
                        intact = False
    return extent, intact


def allocate_memories(machine: Machine, bundle: Bundle,
                      extent: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Zeroed byte arrays for every memory (``extent`` bytes each, by default ``memory_extents``), DRAM
    holding the constants image at offset 0."""
    if extent is None:
        extent, _ = memory_extents(machine, bundle)
    memories = {name: np.zeros(size, dtype=np.uint8) for name, size in extent.items()}
    memories[machine.dram][:len(bundle.constants)] = np.frombuffer(bundle.constants, dtype=np.uint8)
    return memories
