"""Per-engine programs: the instruction set, its JSON form and the readable ``.asm`` listing.

Four instructions, executed strictly in order by one engine (a compute or dma may be *predicated*: it reads
its gate, ``when``, and when that is all zero does not run: hetc.ir.predicates):

* ``compute``: run a kernel for one graph node on a device; operands are buffers in the device's home memory;
* ``dma``: copy ``bytes`` bytes from a source buffer to a destination buffer (a DMA engine);
* ``signal SEM``: add one to semaphore SEM (visible to other engines ``sync_ns`` later);
* ``wait SEM COUNT``: block until SEM has been signalled at least COUNT times. Semaphores are monotonic
  counters, never decremented, so a wait names exactly which signal it needs. A wait may be predicated too
  (``wait SEM COUNT if GATE``): it stands right before the compute or dma it orders, after that one's plain
  waits, and is skipped with it (hetc.codegen.sync: a skipped task waits for its gate alone).

``compute`` and ``dma`` carry their planned times and duration (from the schedule, which took them from the
target's cost model) and the bytes they move through DRAM, which is what the simulator's bandwidth-sharing model
needs; the simulator never has to rebuild IR nodes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Union

from hetc.ir.dtypes import itemsize
from hetc.ir.tiles import spans
from hetc.memory.artifact import strided_extent

@dataclass(frozen=True, slots=True)
class Operand:
    """One buffer as an instruction sees it: where its bytes are and how to view them."""

    buffer: str
    value: str
    memory: str
    offset: int
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]    # bytes; a region of a tensor (hetc.ir.tiles) has its base's, else C order
    nbytes: int
    storage: str = ""           # the buffer owning these bytes (differs from ``buffer`` for an alias)
    # A host value (hetc.ir.host): its ONNX type, e.g. "seq(tensor(float32)[2])". The operand then names the
    # value in the host CPU's heap: memory "host", no bytes (offset 0, nbytes 0), shape its static shape or ().
    host: str = ""
    # An immediate (hetc.ir.immediates): its element, carried by the instruction. Memory "immediate", no bytes.
    immediate: tuple[Any, ...] | None = None

    @property
    def has_bytes(self) -> bool:
        """Whether the operand is bytes in a memory (not a host value, not an immediate)."""
        return not self.host and self.immediate is None

    def to_json(self) -> dict[str, Any]:
        out = {"buffer": self.buffer, "value": self.value, "memory": self.memory, "offset": self.offset,
               "dtype": self.dtype, "shape": list(self.shape), "strides": list(self.strides),
               "nbytes": self.nbytes, "storage": self.storage or self.buffer}
        if self.host:
            out["host"] = self.host
        if self.immediate is not None:
            out["immediate"] = list(self.immediate)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Operand":
        return cls(buffer=d["buffer"], value=d["value"], memory=d["memory"], offset=d["offset"],
                   dtype=d["dtype"], shape=tuple(d["shape"]), strides=tuple(d["strides"]), nbytes=d["nbytes"],
                   storage=d.get("storage", d["buffer"]), host=d.get("host", ""),
                   immediate=tuple(d["immediate"]) if "immediate" in d else None)

    @property
    def dense(self) -> bool:
        """Whether the elements are C-contiguous from ``offset`` (one run of ``nbytes``); axes of one element
        have no stride."""
        if not self.strides or self.nbytes == 0:
            return True
        # The element size as codegen writes C-order strides: a fraction of a byte for sub-byte types (their
        # innermost stride is then 0), so a packed int4 tensor is dense too
        step = itemsize(self.dtype)
        for d, s in zip(reversed(self.shape), reversed(self.strides)):
            if d != 1 and s != int(step):
                return False
            step *= d
        return True

    def runs(self) -> list[tuple[int, int]]:
        """The byte runs ``[first, end)`` the operand touches (one for a dense operand; ``hetc.ir.tiles.spans``
        of a region: a row band of an NCHW tensor is one run per channel; none for a host value or an
        immediate)."""
        if not self.has_bytes:
            return []
        if self.dense:
            return [(self.offset, self.offset + self.nbytes)]
        return spans(self.offset, self.shape, self.strides, self.nbytes // max(1, math.prod(self.shape)))

    @property
    def end(self) -> int:
        """One past the last byte the operand touches."""
        if self.dense:
            return self.offset + self.nbytes
        return self.offset + strided_extent(self.shape, self.strides, self.nbytes)

    def asm(self) -> str:
        if self.host:
            return f"%{self.value} host {self.host}"
        if self.immediate is not None:
            return f"%{self.value} #{','.join(map(repr, self.immediate))} {self.dtype}"
        dims = "x".join(map(str, self.shape)) or "()"
        strided = "" if self.dense else " strides=" + ",".join(map(str, self.strides))
        return f"%{self.value} {self.memory}+0x{self.offset:x} {self.dtype}[{dims}]{strided}"


@dataclass(frozen=True, slots=True)
class Compute:
    task: int
    node: int
    name: str
    op: str
    domain: str
    kernel: str                         # "<device kind>.<op>" (domain-qualified outside ai.onnx)
    inputs: tuple[Operand | None, ...]  # node input order; None for an omitted optional input
    outputs: tuple[Operand, ...]
    attrs: dict[str, Any]               # tagged JSON (hetc.codegen.attrs)
    duration_ns: int
    planned_start_ns: int
    planned_end_ns: int
    dram_bytes: int                     # operand bytes it streams through DRAM (bandwidth sharing)
    inplace: tuple[int, ...] = ()       # outputs that alias an input without changing bytes
    # Predicated (hetc.ir.predicates): the gate it reads to decide; when the gate is all zero it runs for
    # ``skip_ns`` instead, writing zeros to its outputs (``zero_fill``) or nothing.
    when: Operand | None = None
    skip_ns: int = 0
    zero_fill: bool = False
    kind: str = field(default="compute", init=False)

    def to_json(self) -> dict[str, Any]:
        out = {"op": "compute", "task": self.task, "node": self.node, "name": self.name, "op_type": self.op,
               "domain": self.domain, "kernel": self.kernel,
               "inputs": [o.to_json() if o is not None else None for o in self.inputs],
               "outputs": [o.to_json() for o in self.outputs], "attrs": self.attrs,
               "duration_ns": self.duration_ns, "planned_start_ns": self.planned_start_ns,
               "planned_end_ns": self.planned_end_ns, "dram_bytes": self.dram_bytes,
               "inplace": list(self.inplace)}
        if self.when is not None:   # (only then: bundles without predicates stay as they were)
            out.update(when=self.when.to_json(), skip_ns=self.skip_ns, zero_fill=self.zero_fill)
        return out

    def asm(self) -> str:
        ins = ", ".join(o.asm() if o is not None else "_" for o in self.inputs)
        outs = ", ".join(o.asm() for o in self.outputs)
        guard = "" if self.when is None else (f" if {self.when.asm()} else "
                                               f"{'zero-fill' if self.zero_fill else 'skip'} {self.skip_ns} ns")
        return (f"compute #{self.node} {self.kernel} '{self.name}' ({ins}) -> ({outs}){guard}"
                f"  ; task {self.task}, {self.duration_ns} ns")


@dataclass(frozen=True, slots=True)
class Dma:
    task: int
    value: str
    src: Operand
    dst: Operand
    bytes: int
    duration_ns: int
    planned_start_ns: int
    planned_end_ns: int
    dram_bytes: int
    when: Operand | None = None         # predicated: the gate it reads at its destination; all zero: no copy
    kind: str = field(default="dma", init=False)

    def to_json(self) -> dict[str, Any]:
        out = {"op": "dma", "task": self.task, "value": self.value, "src": self.src.to_json(),
               "dst": self.dst.to_json(), "bytes": self.bytes, "duration_ns": self.duration_ns,
               "planned_start_ns": self.planned_start_ns, "planned_end_ns": self.planned_end_ns,
               "dram_bytes": self.dram_bytes}
        if self.when is not None:
            out["when"] = self.when.to_json()
        return out

    def asm(self) -> str:
        guard = "" if self.when is None else f" if {self.when.asm()}"
        return (f"dma %{self.value} {self.src.memory}+0x{self.src.offset:x}{_descriptor(self.src)} -> "
                f"{self.dst.memory}+0x{self.dst.offset:x}{_descriptor(self.dst)} {self.bytes} B{guard}  ; task "
                f"{self.task}, {self.duration_ns} ns")


def _descriptor(o: Operand) -> str:
    """A strided side of a DMA (a region of a tensor): its shape and byte strides; nothing for a dense one."""
    if o.dense:
        return ""
    return f" [{'x'.join(map(str, o.shape))} strides={','.join(map(str, o.strides))}]"


@dataclass(frozen=True, slots=True)
class Signal:
    sem: str
    kind: str = field(default="signal", init=False)

    def to_json(self) -> dict[str, Any]:
        return {"op": "signal", "sem": self.sem}

    def asm(self) -> str:
        return f"signal {self.sem}"


@dataclass(frozen=True, slots=True)
class Wait:
    sem: str
    count: int                          # 0 never blocks (a predicated wait its gate turned off: Machine.skipping)
    when: Operand | None = None         # predicated: skipped with the instruction it stands before
    kind: str = field(default="wait", init=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": "wait", "sem": self.sem, "count": self.count}
        if self.when is not None:
            out["when"] = self.when.to_json()
        return out

    def asm(self) -> str:
        return f"wait {self.sem} {self.count}" + ("" if self.when is None else f" if {self.when.asm()}")


Instruction = Union[Compute, Dma, Signal, Wait]


def instruction_from_json(d: dict[str, Any]) -> Instruction:
    op = d["op"]
    if op == "compute":
        return Compute(task=d["task"], node=d["node"], name=d["name"], op=d["op_type"], domain=d["domain"],
                       kernel=d["kernel"],
                       inputs=tuple(Operand.from_json(o) if o is not None else None for o in d["inputs"]),
                       outputs=tuple(Operand.from_json(o) for o in d["outputs"]), attrs=d["attrs"],
                       duration_ns=d["duration_ns"], planned_start_ns=d["planned_start_ns"],
                       planned_end_ns=d["planned_end_ns"], dram_bytes=d["dram_bytes"],
                       inplace=tuple(d.get("inplace", ())),
                       when=Operand.from_json(d["when"]) if "when" in d else None, skip_ns=d.get("skip_ns", 0),
                       zero_fill=d.get("zero_fill", False))
    if op == "dma":
        return Dma(task=d["task"], value=d["value"], src=Operand.from_json(d["src"]),
                   dst=Operand.from_json(d["dst"]), bytes=d["bytes"], duration_ns=d["duration_ns"],
                   planned_start_ns=d["planned_start_ns"], planned_end_ns=d["planned_end_ns"],
                   dram_bytes=d["dram_bytes"], when=Operand.from_json(d["when"]) if "when" in d else None)
    if op == "signal":
        return Signal(sem=d["sem"])
    if op == "wait":
        return Wait(sem=d["sem"], count=d["count"], when=Operand.from_json(d["when"]) if "when" in d else None)
    raise ValueError(f"unknown instruction '{op}'")


@dataclass(frozen=True, slots=True)
class Program:
    """The instruction stream of one engine (a device or a DMA engine)."""

    engine: str
    kind: str                       # "cpu" | "npu" | "dsp" (devices) or "dma"
    memories: tuple[str, ...]       # home memory of a device; the two memories a DMA engine links
    instructions: tuple[Instruction, ...]

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "kind": self.kind, "memories": list(self.memories),
                "instructions": [i.to_json() for i in self.instructions]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Program":
        return cls(engine=d["engine"], kind=d["kind"], memories=tuple(d["memories"]),
                   instructions=tuple(instruction_from_json(i) for i in d["instructions"]))

    def dumps(self) -> str:
        # One instruction per line: diffable, and still valid JSON.
        head = json.dumps({"engine": self.engine, "kind": self.kind, "memories": list(self.memories)},
                          sort_keys=True)[:-1]
        body = ",\n".join(" " + json.dumps(i.to_json(), sort_keys=True) for i in self.instructions)
        return f'{head}, "instructions": [\n{body}\n]}}\n'

    def asm(self) -> str:
        where = "home " + self.memories[0] if self.kind != "dma" else " <-> ".join(self.memories)
        counts = {k: sum(1 for i in self.instructions if i.kind == k) for k in ("compute", "dma", "wait",
                                                                               "signal")}
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        lines = [f"; engine {self.engine} ({self.kind}, {where}): {summary or 'empty'}"]
        lines += [f"{pc:05d}  {ins.asm()}" for pc, ins in enumerate(self.instructions)]
        return "\n".join(lines) + "\n"
