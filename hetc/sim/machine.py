"""The machine a bundle runs on: its engines' programs, semaphores, DRAM bandwidth and memory sizes, and
(functional mode) one byte array per memory.

The event loop reads the programs' instruction objects directly (``kind``, ``duration_ns``, ``dram_bytes``,
``sem``, ``count``): decoding them into another form would cost as much as simulating them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetc.codegen.bundle import Bundle
from hetc.codegen.program import Compute, Dma, Instruction, Operand


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


def _span(o: Operand, write: bool) -> tuple[str, int, int, bool]:
    return (o.memory, o.offset, o.offset + o.nbytes, write)


def accesses(ins: Compute | Dma) -> list[tuple[str, int, int, bool]]:
    """(memory, first byte, end byte, writes?) of each operand of a compute or DMA."""
    if isinstance(ins, Dma):
        return [_span(ins.src, False), _span(ins.dst, True)]
    spans = [_span(o, False) for o in ins.inputs if o is not None]
    # An in-place Reshape-like output rewrites identical bytes: a read, not a write, for race purposes.
    spans += [_span(o, k not in ins.inplace) for k, o in enumerate(ins.outputs)]
    return spans


@dataclass
class _Held:
    """The byte arrays of the last functional run, kept for the next run of the same bundle."""

    bundle: Bundle
    memories: dict[str, np.ndarray]
    constants_intact: bool     # no instruction writes into the constants image: it need not be copied again


_held: list[_Held] = []   # at most one: the most recently released run's memories
_lent: dict[int, _Held] = {}   # id(memories) -> its record, while a run uses them


def allocate_memories(machine: Machine, bundle: Bundle) -> dict[str, np.ndarray]:
    """Zeroed byte arrays for every memory, DRAM holding the constants image at offset 0.

    Copying the constants image (hundreds of MB for VGG-19) dominated repeated runs of a bundle, so the
    arrays of the previous run (``release_memories``) are reused when it was the same bundle: everything but
    an intact constants image is zeroed again, so a run never sees the bytes of the one before."""
    held = _held.pop() if _held else None
    if held is not None and held.bundle is bundle:
        constants = len(bundle.constants) if held.constants_intact else 0
        for name, memory in held.memories.items():
            memory[constants if name == machine.dram else 0:] = 0
        if not held.constants_intact:
            held.memories[machine.dram][:len(bundle.constants)] = np.frombuffer(bundle.constants, dtype=np.uint8)
        _lent[id(held.memories)] = held
        return held.memories
    extent = dict(machine.memory_extent)
    image = np.frombuffer(bundle.constants, dtype=np.uint8)
    intact = True
    for program in machine.programs:   # the plan's extents, widened by any operand that lies beyond them
        for ins in program:
            if moves_data(ins):
                for memory, lo, hi, write in accesses(ins):  # type: ignore[arg-type]
                    extent[memory] = max(extent.get(memory, 0), hi)
                    if write and lo < image.size and memory == machine.dram:
                        intact = False
    memories = {name: np.zeros(size, dtype=np.uint8) for name, size in extent.items()}
    memories[machine.dram][:image.size] = image
    _lent[id(memories)] = _Held(bundle, memories, intact)
    return memories


def release_memories(memories: dict[str, np.ndarray]) -> None:
    """Hand a finished run's arrays back for the next run of the same bundle (replacing any others held)."""
    held = _lent.pop(id(memories), None)
    if held is not None:
        _held[:] = [held]
