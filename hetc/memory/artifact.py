"""The MemoryPlan artifact: where every buffer lives, from when to when.

A *buffer* is one copy of one value in one memory over one live interval ``[start_ns, end_ns)``. A value has
a buffer in its producer's home memory and one per memory a transfer brings it to; a spilled value has a second
buffer in the same scratchpad after its reload. ``task_buffers`` binds every task of the (possibly re-timed)
schedule to the buffers it reads and writes, so codegen never has to guess which copy an operand is.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hetc.schedule.artifact import Schedule

if TYPE_CHECKING:
    from hetc.target.target import Target


# Host values (hetc.ir.host) are not buffers: nothing is planned for them. A task that reads or writes one is
# bound to the reference ``<value>@host`` in its TaskBuffers, so that codegen can name the value in the
# instruction; no Buffer of the plan carries that id ("host" is reserved: no target memory may use it).
HOST = "host"


def host_ref(value: str) -> str:
    return f"{value}@{HOST}"


def is_host_ref(ref: str | None) -> bool:
    return ref is not None and ref.endswith("@" + HOST)


def host_ref_value(ref: str) -> str:
    return ref[:-len(HOST) - 1]


# Immediates (hetc.ir.immediates) are not buffers either: the instruction carries the value. A compute task
# reading one is bound to ``<value>@immediate`` ("immediate" is reserved like "host").
IMMEDIATE = "immediate"


def immediate_ref(value: str) -> str:
    return f"{value}@{IMMEDIATE}"


def is_immediate_ref(ref: str | None) -> bool:
    return ref is not None and ref.endswith("@" + IMMEDIATE)


def immediate_ref_value(ref: str) -> str:
    return ref[:-len(IMMEDIATE) - 1]


def strided_extent(shape: tuple[int, ...], strides: tuple[int, ...], nbytes: int) -> int:
    """Bytes from a strided tensor's first byte to one past its last (``nbytes`` its element bytes)."""
    if nbytes == 0 or any(d == 0 for d in shape):
        return 0
    item = nbytes // max(1, math.prod(shape))
    return sum((d - 1) * st for d, st in zip(shape, strides)) + item



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
    alias_of: str | None = None  # buffer id whose storage this one shares (in-place Reshape, regions...)
    dtype: str = "float32"
    shape: tuple[int, ...] = ()
    # Byte strides, None when C-contiguous. A region of a tensor (hetc.ir.tiles) lies in its base's bytes at
    # ``offset`` with the base's strides; its ``size`` stays the element bytes.
    strides: tuple[int, ...] | None = None

    @property
    def owner(self) -> str:
        """The buffer whose bytes this one lives in: the one it aliases, or itself. An owner aliases nothing
        (``MemoryPlan.verify`` checks it), so this is the storage every alias of it shares."""
        return self.alias_of or self.id

    @property
    def end(self) -> int:
        """One past the last byte the buffer touches."""
        if self.strides is None:
            return self.offset + self.size
        return self.offset + strided_extent(self.shape, self.strides, self.size)


@dataclass(frozen=True)
class MemoryStats:
    peak_bytes: int             # highest address in use (max offset + size over buffers)
    lower_bound_bytes: int      # max over time of live bytes: no packing can go below it
    capacity_bytes: int
    spilled_bytes: int = 0
    peak_time_ns: int = 0       # when the live set is largest
    peak_buffers: tuple[str, ...] = ()  # buffer ids live at that time
    # the most bytes live at once in the schedule as its scheduler made it, before memory planning repaired
    # it: above the capacity, the scheduler's schedule did not fit (None for DRAM)
    scheduled_live_bytes: int | None = None


@dataclass(frozen=True)
class Spill:
    value: str
    memory: str                 # the scratchpad it was evicted from
    to: str                     # where it waited (Target.spill_memory: the L2 or DRAM)
    bytes: int
    evict_task: int | None      # transfer task id (memory -> to); None for a re-fetch: ``to`` already held it
    reload_task: int | None     # transfer task id (to -> memory), None if no later use needed it


def spills_note(spills: "tuple[Spill, ...] | list[Spill]") -> str:
    """``"3 spills (2 to l2, 1 to dram)"``: how many, and where they went (reports and the build's progress)."""
    if not spills:
        return "0 spills"
    where = ", ".join(f"{n} to {m}" for m, n in sorted(Counter(s.to for s in spills).items()))
    return f"{len(spills)} spill{'s' if len(spills) > 1 else ''} ({where})"


@dataclass(frozen=True)
class TaskBuffers:
    reads: tuple[str | None, ...]   # buffer ids, in the node's input order (None for an omitted input)
    writes: tuple[str, ...]         # buffer ids, in the node's output order
    # (a host value's position holds ``host_ref(value)`` instead of a buffer id: see HOST above)


@dataclass(frozen=True)
class MemoryPlan:
    buffers: tuple[Buffer, ...]
    stats: dict[str, MemoryStats]
    task_buffers: dict[int, TaskBuffers]
    schedule: Schedule          # the schedule the plan is valid for (re-timed when spills were inserted)
    spills: tuple[Spill, ...] = ()
    constants_bytes: int = 0    # size of the read-only constants region at the bottom of DRAM
    details: dict[str, Any] = field(default_factory=dict)  # planner time, method per memory...
    # task id -> tasks that must end before it starts because it writes bytes they use (address reuse).
    # The plan's times respect them; codegen turns the cross-engine ones into semaphores so that a run whose
    # timing differs from the plan cannot overwrite a buffer that is still being read.
    reuse_deps: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def buffer(self, buffer_id: str) -> Buffer:
        by_id = self.__dict__.get("_by_id_cache")
        if by_id is None:
            by_id = {b.id: b for b in self.buffers}
            object.__setattr__(self, "_by_id_cache", by_id)
        return by_id[buffer_id]

    def owner_of(self, buffer_id: str) -> Buffer:
        """The buffer that owns the storage ``buffer_id`` lives in (itself when it aliases nothing)."""
        return self.buffer(self.buffer(buffer_id).owner)

    def violations(self, target: "Target") -> list[str]:
        """Every broken invariant, as sentences (empty when the plan is valid); see ``hetc.memory.verify``."""
        from hetc.memory.verify import plan_violations
        return plan_violations(self, target)

    def verify(self, target: "Target") -> None:
        """Raise MemoryPlanError listing the broken invariants: overlaps, capacity, alignment, bindings."""
        problems = self.violations(target)
        if problems:
            from hetc.errors import MemoryPlanError
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise MemoryPlanError("memory plan is invalid: " + "; ".join(problems[:10]) + more)

    def dumps(self) -> str:
        """``memory.json``."""
        return json.dumps(self.to_json(), indent=1)

    @classmethod
    def loads(cls, text: str, schedule: Schedule) -> "MemoryPlan":
        return cls.from_json(json.loads(text), schedule)

    def to_json(self) -> dict[str, Any]:
        return {
            "memories": {m: asdict(s) for m, s in self.stats.items()},
            "constants_bytes": self.constants_bytes,
            "buffers": [asdict(b) for b in self.buffers],
            "spills": [asdict(s) for s in self.spills],
            "task_buffers": {str(t): {"reads": list(tb.reads), "writes": list(tb.writes)}
                             for t, tb in sorted(self.task_buffers.items())},
            "details": self.details,
            "reuse_deps": {str(t): list(d) for t, d in sorted(self.reuse_deps.items())},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], schedule: Schedule) -> "MemoryPlan":
        return cls(
            buffers=tuple(Buffer(**{**b, "shape": tuple(b["shape"]),
                                    "strides": None if b.get("strides") is None else tuple(b["strides"])})
                          for b in d["buffers"]),
            stats={m: MemoryStats(**{**s, "peak_buffers": tuple(s["peak_buffers"])})
                   for m, s in d["memories"].items()},
            task_buffers={int(t): TaskBuffers(tuple(tb["reads"]), tuple(tb["writes"]))
                          for t, tb in d["task_buffers"].items()},
            schedule=schedule,
            spills=tuple(Spill(**s) for s in d["spills"]),
            constants_bytes=d["constants_bytes"],
            details=d.get("details", {}),
            reuse_deps={int(t): tuple(v) for t, v in d.get("reuse_deps", {}).items()},
        )
