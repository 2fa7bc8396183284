"""The MemoryPlan artifact: where every buffer lives, from when to when.

A *buffer* is one copy of one value in one memory over one live interval ``[start_ns, end_ns)``. A value has
a buffer in its producer's home memory and one per memory a transfer brings it to; a spilled value has a second
buffer in the same scratchpad after its reload. ``task_buffers`` binds every task of the (possibly re-timed)
schedule to the buffers it reads and writes, so codegen never has to guess which copy an operand is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hetc.schedule.artifact import Schedule


@dataclass(frozen=True)
class Buffer:
    id: str                     # unique, e.g. "conv1_out@npu_sram" or "conv1_out@npu_sram#1" after a spill
    value: str
    memory: str
    offset: int
    size: int                   # bytes (before alignment padding)
    start_ns: int               # live from the start of the task that writes it ...
    end_ns: int                 # ... to the end of its last reader (exclusive)
    kind: str = "activation"    # "input" | "output" | "constant" | "activation" | "copy"
    alias_of: str | None = None  # buffer id whose storage this one shares (in-place Reshape and friends)
    dtype: str = "float32"
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class MemoryStats:
    peak_bytes: int             # highest address in use (max offset + size over buffers)
    lower_bound_bytes: int      # max over time of live bytes: no packing can go below it
    capacity_bytes: int
    spilled_bytes: int = 0
    peak_time_ns: int = 0       # when the live set is largest
    peak_buffers: tuple[str, ...] = ()  # buffer ids live at that time


@dataclass(frozen=True)
class Spill:
    value: str
    memory: str                 # the scratchpad it was evicted from
    bytes: int
    evict_task: int             # transfer task id (memory -> DRAM)
    reload_task: int | None     # transfer task id (DRAM -> memory), None if no later use needed it


@dataclass(frozen=True)
class TaskBuffers:
    reads: tuple[str | None, ...]   # buffer ids, in the node's input order (None for an omitted input)
    writes: tuple[str, ...]         # buffer ids, in the node's output order


@dataclass(frozen=True)
class MemoryPlan:
    buffers: tuple[Buffer, ...]
    stats: dict[str, MemoryStats]
    task_buffers: dict[int, TaskBuffers]
    schedule: Schedule          # the schedule the plan is valid for (re-timed when spills were inserted)
    spills: tuple[Spill, ...] = ()
    constants_bytes: int = 0    # size of the read-only constants region at the bottom of DRAM
    details: dict[str, Any] = field(default_factory=dict)  # planner time, method per memory...

    def buffer(self, buffer_id: str) -> Buffer:
        by_id = self.__dict__.get("_by_id_cache")
        if by_id is None:
            by_id = {b.id: b for b in self.buffers}
            object.__setattr__(self, "_by_id_cache", by_id)
        return by_id[buffer_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "memories": {m: asdict(s) for m, s in self.stats.items()},
            "constants_bytes": self.constants_bytes,
            "buffers": [asdict(b) for b in self.buffers],
            "spills": [asdict(s) for s in self.spills],
            "task_buffers": {str(t): {"reads": list(tb.reads), "writes": list(tb.writes)}
                             for t, tb in sorted(self.task_buffers.items())},
            "details": self.details,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], schedule: Schedule) -> "MemoryPlan":
        return cls(
            buffers=tuple(Buffer(**{**b, "shape": tuple(b["shape"])}) for b in d["buffers"]),
            stats={m: MemoryStats(**{**s, "peak_buffers": tuple(s["peak_buffers"])})
                   for m, s in d["memories"].items()},
            task_buffers={int(t): TaskBuffers(tuple(tb["reads"]), tuple(tb["writes"]))
                          for t, tb in d["task_buffers"].items()},
            schedule=schedule,
            spills=tuple(Spill(**s) for s in d["spills"]),
            constants_bytes=d["constants_bytes"],
            details=d.get("details", {}),
        )
