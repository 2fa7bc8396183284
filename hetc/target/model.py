"""The target description: memories, devices, DMA engines and the cost of synchronisation.

Units inside the dataclasses are SI-ish integers/floats chosen to keep arithmetic obvious:
bytes, bytes per nanosecond (== GB/s), nanoseconds, and operations per nanosecond (== GOP/s).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Memory:
    name: str
    size: int                 # bytes
    bandwidth: float          # GB/s (== bytes per ns) that devices homed here can stream
    alignment: int = 64       # bytes; every buffer offset is a multiple of it
    kind: str = "sram"        # "dram" | "sram" | "l2"


@dataclass(frozen=True)
class Device:
    name: str
    kind: str                            # "cpu" | "npu" | "dsp"
    memory: str                          # home memory: where a node's operands must be resident
    peak: dict[str, float]               # GOP/s (== ops per ns) per dtype, e.g. {"float32": 64.0}
    efficiency: dict[str, float]         # fraction of peak reached per op class (see hetc.target.cost)
    launch_ns: float                     # fixed cost of starting one kernel
    ops: frozenset[str] | None = None    # None: every ONNX op (the CPU)
    dtypes: frozenset[str] | None = None  # None: every dtype
    limits: dict[str, Any] = field(default_factory=dict)  # attribute limits, e.g. {"max_kernel": 11}


@dataclass(frozen=True)
class DmaEngine:
    name: str
    memories: tuple[str, str]  # the two memories it connects; it moves data in both directions
    bandwidth: float           # GB/s (== bytes per ns)
    latency_ns: float          # descriptor setup + first-byte latency per transfer

    def serves(self, a: str, b: str) -> bool:
        return {a, b} == set(self.memories)


@dataclass(frozen=True)
class Ok:
    """A capability check that passed. Truthy."""

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Reason:
    """Why a device refuses a node. Falsy, so ``if target.supports(n, d):`` reads naturally."""

    code: str      # "op" | "dtype" | "attribute" | "working-set" | "subgraph" | "host"
    message: str   # e.g. "Resize mode 'cubic' is not supported (npu supports resize_modes: nearest, linear)"

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.message
