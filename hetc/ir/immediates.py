"""Immediates: the constants an instruction carries in its own descriptor rather than reading from memory.

An accelerator's command stream gives each operation its scalar parameters inline (a quantized layer's input,
weight and output scales and zero points, a Clip's bounds, an elementwise op's scalar operand), as Arm's
Ethos-U command stream and every NPU ISA do: they have no buffer in any memory and no DMA moves them. In hetc a
constant is an *immediate* when it holds one element of at most ``IMMEDIATE_MAX_BYTES`` and only compute
nodes read it (a tile's Region or Assemble is a view of memory, so a constant one of them reads stays a
buffer). This module is the one statement of the rule: the scheduler leaves immediates out of every node's
inputs (no transfer), the memory planner plans no buffer for them, code generation writes their values into
the instruction, and the simulator reads them from there.
"""
from __future__ import annotations

from hetc.ir.graph import Value
from hetc.ir.tiles import is_alias

IMMEDIATE_MAX_BYTES = 8      # one 64-bit word of a descriptor
# dtypes whose element a descriptor (and the bundle's JSON) holds exactly as a number
_NUMBER_DTYPES = frozenset({"bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                            "float16", "float32", "float64"})


def is_immediate(value: Value) -> bool:
    """Whether ``value`` travels inside the instructions that read it (see the module docstring)."""
    return (value.is_const and value.host is None and value.numel == 1 and value.nbytes <= IMMEDIATE_MAX_BYTES
            and value.dtype in _NUMBER_DTYPES and not any(is_alias(c) for c in value.consumers))
