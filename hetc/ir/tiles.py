"""Alias ops: the two nodes that move no data, with which the tiler expresses tiles.

A node too big for a scratchpad is cut into tile nodes (ordinary ops on smaller shapes, each carrying a
``TileRef``). Each tile reads a *region* of the original inputs and writes a region of the original output;
two ops of the domain ``TILE_DOMAIN`` say which:

* ``Region(X) -> S`` with integer-list attributes ``starts`` and ``ends`` (one entry per axis, step 1):
  ``S = X[starts:ends]``. S is a *view*: it occupies the bytes of X it names, in the memory X is in, at byte
  offset ``region_offset`` from X's first byte and with X's byte strides.
* ``Assemble(P_0, ..., P_k) -> O`` with integer attribute ``axis``: O is the concatenation of the parts along
  ``axis`` (as ONNX Concat). The parts are written *in place*: part i occupies the bytes of O from
  ``assemble_starts(node)[i]`` on along ``axis``, with O's strides, so joining them copies nothing.

Execution model (hetc.schedule.tasks states it; every stage follows): an alias node is not a task and runs on
no device. Its output lives in one memory: a Region's in the memory its input was born in, an Assemble's in
DRAM or, on a target that stages through an on-chip L2, there (hetc.schedule.problem.assembly_memories). A
Region's output is available there when its input is; an Assemble's when every part has been written there
(by its producer, or by the DMA that brings it, which writes straight into O's bytes). A reader in
another memory gets the region by DMA like any value: a strided (2-D/3-D) descriptor, not a gather.

The ops exist only inside hetc between tiling and code generation: the tiler makes them, and so does
hetc.passes.alias_ops from the model's own Split, Slice and (in-place) Concat. ``to_onnx`` writes them as Slice
and Concat.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from hetc.ir.dtypes import itemsize
from hetc.ir.graph import Node, Value

TILE_DOMAIN = "hetc.tile"
REGION = "Region"
ASSEMBLE = "Assemble"
ALIAS_OPS = frozenset({REGION, ASSEMBLE})


def is_alias(node: Node) -> bool:
    """Whether ``node`` is a Region or an Assemble (moves no data; is not a task)."""
    return node.domain == TILE_DOMAIN and node.op_type in ALIAS_OPS


def is_region(value: Value) -> bool:
    """Whether ``value`` is a Region's output: it lies in its base's bytes at an offset, with the base's strides."""
    return value.producer is not None and is_alias(value.producer) and value.producer.op_type == REGION


def contiguous_strides(shape: Sequence[int], dtype: str) -> tuple[int, ...]:
    """Byte strides of a C-ordered tensor."""
    strides, step = [], itemsize(dtype)
    for dim in reversed(tuple(shape)):
        strides.append(step)
        step *= max(int(dim), 1)
    return tuple(reversed(strides))


def region_bounds(node: Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(starts, ends) of a Region node, full rank."""
    return tuple(int(s) for s in node.attrs["starts"]), tuple(int(e) for e in node.attrs["ends"])


def region_offset(starts: Sequence[int], base_strides: Sequence[int]) -> int:
    """Byte offset of a region's first element from its base's first element."""
    return sum(int(s) * int(st) for s, st in zip(starts, base_strides))


def assemble_starts(node: Node) -> list[tuple[int, ...]]:
    """Per part, its starting index in the Assemble's output (full rank): zero except along ``axis``."""
    rank = len(node.outputs[0].shape)
    axis = int(node.attrs["axis"]) % rank
    starts, at = [], 0
    for part in node.inputs:
        assert part is not None
        start = [0] * rank
        start[axis] = at
        starts.append(tuple(start))
        at += part.shape[axis]
    return starts


def region_of_part(node: Node, index: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(starts, ends) of part ``index`` of an Assemble inside its output."""
    start = assemble_starts(node)[index]
    part = node.inputs[index]
    assert part is not None
    return start, tuple(s + d for s, d in zip(start, part.shape))


def spans(offset: int, shape: Sequence[int], strides: Sequence[int], item: int) -> list[tuple[int, int]]:
    """The contiguous byte runs ``[first, end)`` a strided tensor touches, in address order, merged where
    adjacent. A region of a C-ordered tensor has at most prod(outer dims) runs; DMA descriptors and the race
    detector use them."""
    shape, strides = tuple(int(d) for d in shape), tuple(int(s) for s in strides)
    if not shape:
        return [(offset, offset + item)]
    if any(d == 0 for d in shape):
        return []
    # Fold the innermost contiguous axes into one run.
    run, k = item, len(shape)
    while k > 0 and (shape[k - 1] == 1 or strides[k - 1] == run):
        run *= shape[k - 1]
        k -= 1
    outer_shape, outer_strides = shape[:k], strides[:k]
    starts = np.zeros(1, dtype=np.int64) + offset
    for d, s in zip(outer_shape, outer_strides):
        starts = (starts[:, None] + np.arange(d, dtype=np.int64)[None, :] * s).reshape(-1)
    starts.sort()
    out: list[tuple[int, int]] = []
    for a in starts.tolist():
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], a + run)
        else:
            out.append((a, a + run))
    return out


def run_alias(node: Node, inputs: list[np.ndarray]) -> np.ndarray:
    """The value an alias node denotes, computed from its inputs (the graph-level reference semantics)."""
    if node.op_type == REGION:
        starts, ends = region_bounds(node)
        return np.ascontiguousarray(inputs[0][tuple(slice(s, e) for s, e in zip(starts, ends))])
    axis = int(node.attrs["axis"]) % len(node.outputs[0].shape)
    return np.concatenate(inputs, axis=axis)


def region_nbytes(shape: Sequence[int], dtype: str) -> int:
    return math.prod(int(d) for d in shape) * itemsize(dtype)
