"""Boxes: ``(starts, ends)`` over every axis of a value, in the value's own coordinates; what a tile writes
of its output and reads of each input (hetc.target.tiling.rules says which, per op)."""
from __future__ import annotations

from typing import Sequence

from hetc.ir import Value

Box = tuple[tuple[int, ...], tuple[int, ...]]


def full(v: Value) -> Box:
    return tuple(0 for _ in v.shape), tuple(v.shape)


def with_band(box: Box, axis: int, lo: int, hi: int) -> Box:
    starts, ends = list(box[0]), list(box[1])
    starts[axis], ends[axis] = lo, hi
    return tuple(starts), tuple(ends)


def reshaped_axes_box(x: Value, out: Box, out_shape: Sequence[int]) -> Box:
    """The box of the data input of an op that changes some axes' extent (Pad, Resize): the output's band
    along axes of equal extent (the only ones a tile cuts), the input's whole axis where the op resizes it."""
    return (tuple(s if d == o else 0 for s, d, o in zip(out[0], x.shape, out_shape)),
            tuple(e if d == o else d for e, d, o in zip(out[1], x.shape, out_shape)))


def broadcast_box(v: Value, out: Box, out_shape: Sequence[int]) -> Box:
    """The box of an operand broadcast (numpy rules) to an output of ``out_shape`` that a tile with output box
    ``out`` reads: the same band along axes the operand spans, the whole (size 1) axis where it broadcasts."""
    rank, out_rank = len(v.shape), len(out_shape)
    starts, ends = [], []
    for i, dim in enumerate(v.shape):
        o = i + out_rank - rank
        if dim == 1 and out_shape[o] != 1:
            starts.append(0)
            ends.append(1)
        else:
            starts.append(out[0][o])
            ends.append(out[1][o])
    return tuple(starts), tuple(ends)


def box_shape(box: Box) -> tuple[int, ...]:
    return tuple(e - s for s, e in zip(*box))
