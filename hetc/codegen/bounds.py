"""Load-time bounds: every buffer an instruction names lies inside its memory, at that memory's alignment
(a strided region of a tensor: every byte run it touches).

The simulator trusts programs: it sizes each memory's byte array to what the instructions touch, so an operand
beyond a memory's capacity would quietly grow the array and run to wrong outputs instead of failing. Checksums
only prove that files are unchanged since the manifest was written, so ``load_bundle`` also checks every
operand (and each DMA's source and destination span) against the memories of the target the bundle embeds.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple

from hetc.codegen.program import Compute, Dma, Operand, Program
from hetc.memory.artifact import HOST, strided_extent
from hetc.target.model import Memory

MAX_LISTED = 5   # problems spelled out in the error; the rest are counted


def bounds_violations(programs: Mapping[str, Program], memories: Mapping[str, Memory],
                      bindings: Iterable[tuple[str, dict[str, Any]]] = ()) -> list[str]:
    """Every operand outside its memory, misaligned or in an unknown memory, as sentences naming the engine,
    the instruction index, the buffer and the memory. ``bindings`` are the manifest's (kind, input/output)."""
    problems: list[str] = []
    for engine, program in programs.items():
        for index, ins in enumerate(program.instructions):
            if isinstance(ins, Dma):
                where = f"engine '{engine}' instruction {index} (dma of '{ins.value}')"
                for role, operand in (("source", ins.src), ("destination", ins.dst)):
                    problems += _operand_problems(f"{where} {role}", operand, memories, ins.bytes)
            elif isinstance(ins, Compute):
                where = f"engine '{engine}' instruction {index} (compute '{ins.name}')"
                operands = [o for o in (*ins.inputs, *ins.outputs) if o is not None and o.has_bytes]
                for operand in operands:
                    problems += _operand_problems(where, operand, memories, 0)
    for kind, binding in bindings:
        if binding.get("memory") not in (None, HOST):
            nbytes, strides, shape = binding.get("nbytes"), binding.get("strides"), binding.get("shape")
            if strides is not None and _is_int(nbytes) and isinstance(shape, list) and len(strides) == len(shape) \
                    and all(_is_int(x) and x >= 0 for x in (*strides, *shape)):
                nbytes = strided_extent(tuple(shape), tuple(strides), nbytes)   # an input in a slice of an output
            span = _Span(binding.get("buffer"), binding["memory"], binding.get("offset"), nbytes)
            owner = binding.get("storage") in (None, binding.get("buffer"))   # only owners are aligned
            problems += _span_problems(f"{kind} '{binding.get('name')}'", span, memories, aligned=owner)
    return problems


def bounds_message(problems: list[str]) -> str:
    listed = "; ".join(problems[:MAX_LISTED])
    more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
    return listed + more


class _Span(NamedTuple):
    buffer: Any       # read from a file that may have been edited: checked, not trusted
    memory: Any
    offset: Any
    nbytes: Any


def _operand_problems(where: str, o: Operand, memories: Mapping[str, Memory], copied: int) -> list[str]:
    """A dense operand spans ``nbytes`` (or the bytes a DMA copies); a strided one (a region of a tensor) from
    its first byte to its last run's end. A region lies inside another buffer's storage, at an offset that
    need not be aligned: only storage owners are checked for alignment."""
    nbytes = max(o.nbytes, copied) if _is_int(o.nbytes) and _is_int(copied) else o.nbytes
    if _is_int(o.offset) and _is_int(o.nbytes) and o.nbytes >= 0 and _strides_ok(o) and not o.dense:
        nbytes = o.end - o.offset
    owner = o.storage in ("", o.buffer)
    return _span_problems(where, _Span(o.buffer, o.memory, o.offset, nbytes), memories, aligned=owner)


def _strides_ok(o: Operand) -> bool:
    return len(o.strides) == len(o.shape) and all(_is_int(s) and s >= 0 for s in o.strides)


def _span_problems(where: str, s: _Span, memories: Mapping[str, Memory], aligned: bool = True) -> list[str]:
    memory = memories.get(s.memory) if isinstance(s.memory, str) else None
    if memory is None:
        return [f"{where}: buffer '{s.buffer}' is in unknown memory '{s.memory}' (the target has "
                f"{', '.join(sorted(memories))})"]
    if not _is_int(s.offset) or not _is_int(s.nbytes) or s.nbytes < 0:
        return [f"{where}: buffer '{s.buffer}' has offset {s.offset!r} and size {s.nbytes!r}, not byte counts"]
    problems = []
    if s.offset < 0 or s.offset + s.nbytes > memory.size:
        problems.append(f"{where}: buffer '{s.buffer}' [{s.offset}, {s.offset + s.nbytes}) lies outside memory "
                        f"'{memory.name}' ({memory.size} B)")
    if aligned and s.offset % memory.alignment:
        problems.append(f"{where}: buffer '{s.buffer}' offset {s.offset} is not a multiple of memory "
                        f"'{memory.name}''s alignment ({memory.alignment} B)")
    return problems


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
