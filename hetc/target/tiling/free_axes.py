"""Tiling rules for the ops cut along their free axes: elementwise ops and activations, Quantize/
DequantizeLinear, normalisations, Softmax, global pools, Concat, Transpose, Pad and Resize. Every axis the op
does not reduce over (nor pad, nor scale) may be cut; each input is read at the output's box, broadcast, whole
or remapped (``hetc.target.tiling.rules`` has the table's other families)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from hetc.ir import Node
from hetc.target.tiling.axes import Axis, BaseTile, Bands, Rule, Untileable, data_input, nchw_name
from hetc.target.tiling.boxes import Box, box_shape, broadcast_box, full, reshaped_axes_box, with_band


def _quantize_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    """QuantizeLinear/DequantizeLinear: the data at the output's box; a per-axis scale and zero point take
    the band of their axis, scalars stay whole."""
    y = node.outputs[0]
    if int(node.attr("block_size", 0) or 0):
        raise Untileable(f"{node.op_type} with blocked scales (block_size)")
    box = _bands_box(node, bands)
    axis = int(node.attr("axis", 1)) % max(len(y.shape), 1)
    params: list[Box | None] = []
    for v in node.inputs[1:]:
        per_axis = v is not None and len(v.shape) == 1 and v.shape[0] > 1
        params.append(None if v is None else ((box[0][axis],), (box[1][axis],)) if per_axis else full(v))
    return BaseTile([box] + params, dict(node.attrs))


def _free_axes(reduced: Callable[[Node, int], set[int]]) -> Callable[[Node, int], list[Axis]]:
    def axes(node: Node, opset: int) -> list[Axis]:
        y = node.outputs[0]
        rank = len(y.shape)
        skip = reduced(node, opset)
        return [Axis(nchw_name(i, rank), i, y.shape[i]) for i in range(rank) if i not in skip and y.shape[i] > 1]
    return axes


def _bands_box(node: Node, bands: Bands) -> Box:
    y = node.outputs[0]
    rank = len(y.shape)
    box = full(y)
    for i in range(rank):
        name = nchw_name(i, rank)
        if name in bands:
            box = with_band(box, i, *bands[name])
    return box


def _broadcast_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    """Every input read at the output's box, broadcast axes whole (elementwise ops, activations)."""
    y = node.outputs[0]
    box = _bands_box(node, bands)
    return BaseTile([None if v is None else broadcast_box(v, box, y.shape) for v in node.inputs], dict(node.attrs))


def _same_box_tile(data_inputs: int) -> Callable[[Node, Bands, int], BaseTile]:
    """The first ``data_inputs`` inputs at the output's box, the rest whole (LayerNorm's scale and bias,
    Softmax has none)."""
    def tile(node: Node, bands: Bands, opset: int) -> BaseTile:
        box = _bands_box(node, bands)
        return BaseTile([box if i < data_inputs else (None if v is None else full(v))
                         for i, v in enumerate(node.inputs)], dict(node.attrs))
    return tile


def _global_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    """Global pools: the output's batch and channel bands, every spatial position."""
    x = data_input(node)
    box = _bands_box(node, bands)
    return BaseTile([(box[0][:2] + (0,) * (len(x.shape) - 2), box[1][:2] + tuple(x.shape[2:]))], dict(node.attrs))


def _no_reduction(node: Node, opset: int) -> set[int]:
    return set()


def _softmax_reduced(node: Node, opset: int) -> set[int]:
    rank = len(node.outputs[0].shape)
    axis = int(node.attr("axis", -1 if opset >= 13 else 1)) % rank
    return {axis} if opset >= 13 else set(range(axis, rank))   # before 13: the axes from `axis` on, flattened


def _layernorm_reduced(node: Node, opset: int) -> set[int]:
    rank = len(node.outputs[0].shape)
    return set(range(int(node.attr("axis", -1)) % rank, rank))


def _spatial_reduced(node: Node, opset: int) -> set[int]:
    return set(range(2, len(node.outputs[0].shape)))   # global pools and LRN's window: keep batch/channels


def _lrn_reduced(node: Node, opset: int) -> set[int]:
    return {1}   # the window runs across channels


def _batchnorm_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    box = _bands_box(node, bands)
    c0, c1 = box[0][1], box[1][1]
    return BaseTile([box] + [None if v is None else ((c0,), (c1,)) for v in node.inputs[1:]], dict(node.attrs))


def _concat_reduced(node: Node, opset: int) -> set[int]:
    return {int(node.attr("axis")) % len(node.outputs[0].shape)}


def _concat_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    box = _bands_box(node, bands)
    axis = int(node.attr("axis")) % len(node.outputs[0].shape)
    return BaseTile([None if v is None else with_band(box, axis, 0, v.shape[axis]) for v in node.inputs],
                    dict(node.attrs))


def _transpose_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    box = _bands_box(node, bands)
    perm = list(node.attr("perm") or reversed(range(len(box[0]))))
    starts, ends = [0] * len(perm), [0] * len(perm)
    for out_axis, in_axis in enumerate(perm):
        starts[in_axis], ends[in_axis] = box[0][out_axis], box[1][out_axis]
    return BaseTile([(tuple(starts), tuple(ends))], dict(node.attrs))


def _pad_widths(node: Node) -> list[int] | None:
    if "pads" in node.attrs:
        return [int(p) for p in node.attrs["pads"]]
    pads = node.inputs[1] if len(node.inputs) > 1 else None
    if pads is None or pads.const is None or (len(node.inputs) > 3 and node.inputs[3] is not None):
        return None
    return [int(p) for p in pads.const.reshape(-1)]


def _pad_reduced(node: Node, opset: int) -> set[int]:
    widths = _pad_widths(node)
    rank = len(node.outputs[0].shape)
    if widths is None:
        raise Untileable("Pad with run-time pads or an axes input")
    return {i for i in range(rank) if widths[i] or widths[i + rank]}


def _pad_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    box = _bands_box(node, bands)
    x = reshaped_axes_box(data_input(node), box, node.outputs[0].shape)
    return BaseTile([x] + [None if v is None else full(v) for v in node.inputs[1:]], dict(node.attrs))


def _resize_reduced(node: Node, opset: int) -> set[int]:
    if str(node.attr("coordinate_transformation_mode", "half_pixel")) == "tf_crop_and_resize" or node.attr("axes"):
        raise Untileable("Resize with tf_crop_and_resize or an axes attribute")
    x, y = data_input(node), node.outputs[0]
    return {i for i, (a, b) in enumerate(zip(x.shape, y.shape)) if a != b}   # only unscaled axes are free


def _resize_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    box = _bands_box(node, bands)
    x = reshaped_axes_box(data_input(node), box, node.outputs[0].shape)
    tile = BaseTile([x] + [None if v is None else full(v) for v in node.inputs[1:]], dict(node.attrs))
    sizes = node.inputs[3] if len(node.inputs) > 3 else None
    if sizes is not None:   # the tile's own output size
        tile.replace[3] = np.asarray(box_shape(box), dtype=np.int64)
    return tile


ELEMENTWISE = ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
               "Gelu", "Erf", "Softplus", "Clip", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg",
               "Abs", "Reciprocal", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less", "Greater", "Cast")

FREE_AXIS_RULES: dict[str, Rule] = {
    **{op: Rule(_free_axes(_no_reduction), _quantize_tile) for op in ("QuantizeLinear", "DequantizeLinear")},
    **{op: Rule(_free_axes(_no_reduction), _broadcast_tile) for op in ELEMENTWISE},
    "BatchNormalization": Rule(_free_axes(_no_reduction), _batchnorm_tile),
    "LRN": Rule(_free_axes(_lrn_reduced), _same_box_tile(1)),
    "Softmax": Rule(_free_axes(_softmax_reduced), _same_box_tile(1)),
    "LogSoftmax": Rule(_free_axes(_softmax_reduced), _same_box_tile(1)),
    "LayerNormalization": Rule(_free_axes(_layernorm_reduced), _same_box_tile(1)),
    "RMSNormalization": Rule(_free_axes(_layernorm_reduced), _same_box_tile(1)),
    "InstanceNormalization": Rule(_free_axes(_spatial_reduced), _batchnorm_tile),
    "GlobalAveragePool": Rule(_free_axes(_spatial_reduced), _global_tile),
    "GlobalMaxPool": Rule(_free_axes(_spatial_reduced), _global_tile),
    "Concat": Rule(_free_axes(_concat_reduced), _concat_tile),
    "Transpose": Rule(_free_axes(_no_reduction), _transpose_tile),
    "Pad": Rule(_free_axes(_pad_reduced), _pad_tile),
    "Resize": Rule(_free_axes(_resize_reduced), _resize_tile),
}
