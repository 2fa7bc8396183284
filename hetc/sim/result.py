"""The SimResult artifact: what the discrete-event simulator observed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
