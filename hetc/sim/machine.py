"""The machine a bundle runs on, decoded for the event loop: flat steps per engine, semaphore indices,
DRAM bandwidth, and (functional mode) one byte array per memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hetc.codegen.bundle import Bundle
from hetc.codegen.program import Compute, Dma, Instruction, Operand, Signal, Wait
from hetc.errors import SimulationError

COMPUTE, DMA, SIGNAL, WAIT = 0, 1, 2, 3
_CODES = {"compute": COMPUTE, "dma": DMA, "signal": SIGNAL, "wait": WAIT}


class Step:
    """One instruction as the event loop sees it (slots: the loop touches these millions of times)."""

    __slots__ = ("code", "engine", "pc", "duration", "dram_rate", "sem", "count", "accesses", "instr")

    def __init__(self, engine: int, pc: int, instr: Instruction, sem_index: dict[str, int], dram: str) -> None:
        self.code = _CODES[instr.kind]
        self.engine = engine
        self.pc = pc
        self.instr = instr
        self.sem = -1
        self.count = 0
        self.duration = 0.0
        self.dram_rate = 0.0
        self.accesses: tuple[tuple[str, int, int, bool], ...] = ()
        if isinstance(instr, (Signal, Wait)):
            self.sem = sem_index[instr.sem]
            self.count = instr.count if isinstance(instr, Wait) else 0
            return
        self.duration = float(instr.duration_ns)
        if instr.dram_bytes and instr.duration_ns > 0:
            self.dram_rate = instr.dram_bytes / instr.duration_ns   # bytes/ns it needs to run at full speed
        self.accesses = tuple(_accesses(instr))


def _span(o: Operand, write: bool) -> tuple[str, int, int, bool]:
    return (o.memory, o.offset, o.offset + o.nbytes, write)


def _accesses(instr: Compute | Dma) -> list[tuple[str, int, int, bool]]:
    if isinstance(instr, Dma):
        return [_span(instr.src, False), _span(instr.dst, True)]
    spans = [_span(o, False) for o in instr.inputs if o is not None]
    # An in-place Reshape-like output rewrites identical bytes: a read, not a write, for race purposes.
    spans += [_span(o, k not in instr.inplace) for k, o in enumerate(instr.outputs)]
    return spans


@dataclass
class Machine:
    engines: list[str]
    steps: list[list[Step]]          # per engine, in program order
    semaphores: list[str]
    signaller: dict[str, str]        # semaphore -> engine that signals it
    sync_ns: float
    dram: str
    dram_bandwidth: float            # bytes/ns shared by every DRAM user
    device_kind: dict[str, str]      # engine -> "cpu" | "npu" | "dsp" | "dma"
    opset: dict[str, int]
    memory_extent: dict[str, int]    # bytes of each memory the programs touch

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> "Machine":
        machine = bundle.manifest["machine"]
        engines = list(bundle.programs)
        semaphores: list[str] = []
        signaller: dict[str, str] = {}
        for engine, program in bundle.programs.items():
            for ins in program.instructions:
                if isinstance(ins, Signal):
                    if ins.sem not in signaller:
                        semaphores.append(ins.sem)
                    signaller.setdefault(ins.sem, engine)
        for program in bundle.programs.values():
            for ins in program.instructions:
                if isinstance(ins, Wait) and ins.sem not in signaller:
                    semaphores.append(ins.sem)
                    signaller[ins.sem] = "(nobody)"
        sem_index = {s: k for k, s in enumerate(semaphores)}
        dram = machine["dram"]
        steps = [[Step(e, pc, ins, sem_index, dram) for pc, ins in enumerate(bundle.programs[name].instructions)]
                 for e, name in enumerate(engines)]
        extent = {name: int(m["extent"]) for name, m in machine["memories"].items()}
        extent[dram] = max(extent.get(dram, 0), len(bundle.constants))
        for e_steps in steps:
            for s in e_steps:
                for memory, _, hi, _ in s.accesses:
                    extent[memory] = max(extent.get(memory, 0), hi)
        return cls(engines=engines, steps=steps, semaphores=semaphores, signaller=signaller,
                   sync_ns=float(machine["sync_ns"]), dram=dram,
                   dram_bandwidth=float(machine["memories"][dram]["bandwidth"]),
                   device_kind={n: p.kind for n, p in bundle.programs.items()},
                   opset=dict(bundle.manifest["opset"]), memory_extent=extent)

    @property
    def n_instructions(self) -> int:
        return sum(len(s) for s in self.steps)


def allocate_memories(machine: Machine, bundle: Bundle) -> dict[str, np.ndarray]:
    """Zeroed byte arrays for every memory, DRAM holding the constants image at offset 0."""
    memories = {name: np.zeros(size, dtype=np.uint8) for name, size in machine.memory_extent.items()}
    image = np.frombuffer(bundle.constants, dtype=np.uint8)
    memories[machine.dram][:image.size] = image
    return memories


def describe(machine: Machine, step: Step) -> str:
    """``engine[pc] text`` for error messages."""
    ins: Any = step.instr
    text = ins.asm().split("  ;")[0]
    return f"{machine.engines[step.engine]}[{step.pc}] {text}"
