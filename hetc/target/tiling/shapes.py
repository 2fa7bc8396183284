"""Tiles as the tiling driver describes them: the bands of a cut, each tile's op, attributes and input boxes
(``describe_tile``), and a throw-away node of its shapes (``sketch``) for capability and cost."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hetc.ir import Node, Value, dtype_from_numpy
from hetc.ir.fused import (EPILOGUE_ATTR, FUSED_DOMAIN, PACKED_BIAS_ATTR, PACKED_WEIGHT_INPUT, base_input_count,
                           base_node, epilogue_of, has_packed_bias, is_composite, is_fused, packed_dims)
from hetc.target.tiling.boxes import Box, box_shape, broadcast_box
from hetc.target.tiling.axes import Axis, Bands, Untileable, out_box
from hetc.target.tiling.rules import RULES

ACC = "acc"   # a tile input that is the previous partial sum of its K chain


@dataclass(frozen=True)
class TileShape:
    """One tile as the driver builds it: op, domain, attributes (with its own epilogue), per input either
    (original input index, box), (ACC, box) or None, and its box of the original output."""

    op_type: str
    domain: str
    attrs: dict[str, Any]
    inputs: tuple[tuple[Any, Box] | None, ...]
    out: Box
    replace: dict[int, Any]
    partial: bool = False   # its output is a partial sum the next tile of its K chain adds to, on chip


def split_bands(extent: int, count: int, unit: int = 1) -> list[tuple[int, int]]:
    """``count`` bands covering [0, extent), balanced, boundaries at multiples of ``unit``."""
    groups = extent // unit
    q, r = divmod(groups, count)
    bands, at = [], 0
    for i in range(count):
        size = (q + (1 if i < r else 0)) * unit
        bands.append((at, at + size))
        at += size
    return bands


def opset_of(node: Node, opset: int | None) -> int:
    return opset if opset is not None else 17


def describe_tile(node: Node, axes: Sequence[Axis], bands: Bands, k: tuple[int, int], opset: int) -> TileShape:
    """Tile ``bands`` of ``node`` (fused or not), tile ``k[0]`` of a K chain of ``k[1]``."""
    base = base_node(node)
    rule = RULES[base.op_type]
    tile = rule.tile(base, bands, opset)
    y = node.outputs[0]
    ob = out_box(node, bands, axes)
    inputs: list[tuple[Any, Box] | None] = [None if box is None else (i, box) for i, box in enumerate(tile.inputs)]
    dims = packed_dims(node.attrs)
    if dims is not None:   # a packed Conv weight: the weight's output channels are its rows, the bias included
        (source, (starts, ends)), packed = inputs[PACKED_WEIGHT_INPUT], node.inputs[PACKED_WEIGHT_INPUT]
        if tuple(starts[1:]) != (0,) * len(dims) or tuple(ends[1:]) != dims or tile.replace:
            raise Untileable(f"{base.op_type} with its bias packed in its weight is cut along output channels only")
        inputs[PACKED_WEIGHT_INPUT:PACKED_WEIGHT_INPUT + 2] = [(source, ((starts[0], 0), (ends[0], packed.shape[1])))]
    parts = list(node.attrs.get(EPILOGUE_ATTR, [])) if is_fused(node) else []
    nbase = base_input_count(len(node.inputs), epilogue_of(node))
    if parts and any(i >= nbase for i in tile.replace):   # the added input would take an operand's place
        raise Untileable(f"{base.op_type} tile adds an input ahead of its epilogue's operands")
    epilogue: list[str] = []
    if k[0] > 0:   # add the previous partial sum first, then (last tile) the node's own epilogue
        epilogue.append("Add")
        inputs.append((ACC, ob))
    if k[0] == k[1] - 1:
        epilogue += parts
        if has_packed_bias(epilogue_of(node)):   # the weight's box takes the bias row below its last row
            source, (starts, ends) = inputs[PACKED_WEIGHT_INPUT]
            assert ends[0] == base.inputs[PACKED_WEIGHT_INPUT].shape[0], "the last K tile ends at the last row"
            inputs[PACKED_WEIGHT_INPUT] = (source, (starts, (ends[0] + 1, *ends[1:])))
        for j, v in enumerate(node.inputs[nbase:]):
            assert v is not None
            inputs.append((nbase + j, broadcast_box(v, ob, y.shape)))
    if not epilogue:
        while inputs and inputs[-1] is None:
            inputs.pop()
    attrs = {key: value for key, value in tile.attrs.items() if key != EPILOGUE_ATTR}
    if epilogue:
        attrs[EPILOGUE_ATTR] = epilogue
    if dims is not None:
        attrs[PACKED_BIAS_ATTR] = list(dims)
    # A composite's tile stays in the fused domain: the model's opset may predate its op (hetc.ir.fused).
    domain = FUSED_DOMAIN if epilogue or is_composite(node) or dims is not None else ""
    return TileShape(base.op_type, domain, attrs, tuple(inputs), ob, dict(tile.replace),
                     partial=k[0] < k[1] - 1)


def source_value(node: Node, shape: TileShape, source: Any) -> Value:
    """The value tile input ``source`` reads: the node's input, the K chain's accumulator (ACC), or an input
    the tile adds (a constant in ``shape.replace`` past the node's inputs)."""
    y = node.outputs[0]
    if source == ACC:
        return y
    if source >= len(node.inputs):
        array = np.asarray(shape.replace[source])
        return Value(f"{y.name}_in{source}", dtype_from_numpy(array.dtype), tuple(array.shape), const=array)
    v = node.inputs[source]
    assert v is not None
    return v


def sketch(node: Node, shape: TileShape) -> Node:
    """A throw-away node with the tile's shapes, for capability and cost (no constant is sliced)."""
    y = node.outputs[0]
    ins: list[Value | None] = []
    for entry in shape.inputs:
        if entry is None:
            ins.append(None)
            continue
        source, box = entry
        v = source_value(node, shape, source)
        ins.append(Value(v.name, v.dtype, box_shape(box)))
    return Node(node.id, shape.op_type, node.name, ins, [Value(y.name, y.dtype, box_shape(shape.out))],
                shape.attrs, shape.domain)

