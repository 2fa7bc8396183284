"""Tiling rules per op family, as data: ``RULES`` maps an op type to the rule that says along which axes its
output may be cut and, for one tile (one band per cut axis), which box of each input the tile reads and
which attributes it runs with (boxes: hetc.target.tiling.boxes). The driver (hetc.target.tiling.plan) chooses
the cut; it knows nothing of ops. A box covering a whole constant keeps the constant; a smaller one becomes a
new, sliced constant; on an activation it becomes a ``Region`` (hetc.ir.tiles). The output box of a tile is
the product of its bands (full along other axes).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hetc.ir import Node, Value, np_dtype
from hetc.target.ops import CONV_WEIGHT_INPUT, conv_weight_shape
from hetc.target.tiling.axes import Axis, BaseTile, Bands, Rule, Untileable, data_input
from hetc.target.tiling.boxes import Box, broadcast_box, full, with_band
from hetc.target.tiling.free_axes import FREE_AXIS_RULES

# Inputs of a convolution indexed by output channel besides the weight: the bias, and an integer
# convolution's per-channel weight scale and zero point.
_PER_CHANNEL_INPUTS: dict[str, frozenset[int]] = {
    "Conv": frozenset({2}), "ConvTranspose": frozenset({2}), "ConvInteger": frozenset({3}),
    "QLinearConv": frozenset({4, 5, 8}),
}
# Integer matmuls: where B is, and which 1-D parameters may be per row of A (its zero point; QLinearMatMul's
# are scalars in practice) or per column of B (B's scale and zero point).
INTEGER_MATMUL_B: dict[str, int] = {"QLinearMatMul": 3, "MatMulInteger": 1}
_PER_ROW_INPUTS: dict[str, frozenset[int]] = {"QLinearMatMul": frozenset({1, 2}), "MatMulInteger": frozenset({2})}
_PER_COLUMN_INPUTS: dict[str, frozenset[int]] = {"QLinearMatMul": frozenset({4, 5}), "MatMulInteger": frozenset({3})}


# ----------------------------------------------------------------------------------------------- windows
def _explicit_pads(node: Node, x: Value, kernel: Sequence[int]) -> list[int]:
    """The node's pads as an explicit list (auto_pad resolved as ONNX defines it)."""
    spatial = len(x.shape) - 2
    auto = str(node.attr("auto_pad", "NOTSET"))
    strides = list(node.attr("strides") or [1] * spatial)
    dilations = list(node.attr("dilations") or [1] * spatial)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(spatial):
            out = -(-x.shape[2 + i] // strides[i])
            eff = (kernel[i] - 1) * dilations[i] + 1
            total = max(0, (out - 1) * strides[i] + eff - x.shape[2 + i])
            small, big = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else big)
            ends.append(big if auto == "SAME_UPPER" else small)
        return begins + ends
    if auto == "VALID":
        return [0] * (2 * spatial)
    return list(node.attr("pads") or [0] * (2 * spatial))


def _kernel(node: Node) -> list[int]:
    if node.op_type in CONV_WEIGHT_INPUT:
        return list(node.attr("kernel_shape") or conv_weight_shape(node)[2:])
    return list(node.attr("kernel_shape"))


def _row_window(node: Node, r0: int, r1: int) -> tuple[int, int, int, int]:
    """Input rows [i0, i1) that output rows [r0, r1) read, with the tile's top and bottom pads."""
    x = data_input(node)
    kernel = _kernel(node)
    spatial = len(x.shape) - 2
    pads = _explicit_pads(node, x, kernel)
    stride = int((node.attr("strides") or [1] * spatial)[0])
    dilation = int((node.attr("dilations") or [1] * spatial)[0])
    eff = (kernel[0] - 1) * dilation + 1
    lo = r0 * stride - pads[0]
    hi = (r1 - 1) * stride - pads[0] + eff
    height = x.shape[2]
    i0, i1 = max(lo, 0), min(hi, height)
    if i1 <= i0:   # the band sees only padding; read one row so the tile has an input
        raise Untileable(f"{node.op_type} output rows {r0}-{r1} read only padding")
    return i0, i1, i0 - lo, hi - i1


def _window_axes(node: Node, opset: int) -> list[Axis]:
    x, y = data_input(node), node.outputs[0]
    if len(x.shape) < 3:
        return []
    axes = [Axis("channels", 1, y.shape[1], _group_unit(node))]
    if node.op_type != "ConvTranspose":   # its rows scatter into overlapping output windows: not cut here
        axes.append(Axis("rows", 2, y.shape[2]))
    if y.shape[0] > 1:
        axes.append(Axis("batch", 0, y.shape[0]))
    if node.op_type == "AveragePool" and int(node.attr("ceil_mode", 0)) and int(node.attr("count_include_pad", 0)):
        axes = [a for a in axes if a.name != "rows"]   # the ceil overhang would count as padding in a tile
    return axes


def _group_unit(node: Node) -> int:
    group = int(node.attr("group", 1))
    if node.op_type in CONV_WEIGHT_INPUT and group > 1:
        return node.outputs[0].shape[1] // group
    return 1


def _window_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    x, y = data_input(node), node.outputs[0]
    attrs = dict(node.attrs)
    xbox = full(x)
    if "batch" in bands:
        xbox = with_band(xbox, 0, *bands["batch"])
    c0, c1 = bands.get("channels", (0, y.shape[1]))
    boxes: list[Box | None] = []
    if node.op_type in CONV_WEIGHT_INPUT:
        group = int(node.attr("group", 1))
        if group > 1:   # whole groups: their input channels and a smaller group count
            unit_out = y.shape[1] // group
            unit_in = x.shape[1] // group
            g0, g1 = c0 // unit_out, c1 // unit_out
            xbox = with_band(xbox, 1, g0 * unit_in, g1 * unit_in)
            attrs["group"] = g1 - g0
        w = node.inputs[CONV_WEIGHT_INPUT[node.op_type]]
        assert w is not None
        if node.op_type != "ConvTranspose":   # W is [M, C / group, *kernel]
            wbox = with_band(full(w), 0, c0, c1)
        elif group > 1:   # W is [C, M / group, *kernel]: the input channels of the tile's groups
            wbox = with_band(full(w), 0, xbox[0][1], xbox[1][1])
        else:
            wbox = with_band(full(w), 1, c0, c1)
        boxes = [None] * len(node.inputs)
        boxes[CONV_WEIGHT_INPUT[node.op_type]] = wbox
        for i in range(1, len(node.inputs)):
            v = node.inputs[i]
            if v is not None and i != CONV_WEIGHT_INPUT[node.op_type]:
                # the bias, per-channel scales and zero points move with the channel cut; scalars stay whole
                per_channel = i in _PER_CHANNEL_INPUTS[node.op_type] and v.shape and v.shape[0] > 1
                boxes[i] = with_band(full(v), 0, c0, c1) if per_channel else full(v)
    else:
        xbox = with_band(xbox, 1, c0, c1)
        boxes = [None]
    if "rows" in bands:
        i0, i1, top, bottom = _row_window(node, *bands["rows"])
        xbox = with_band(xbox, 2, i0, i1)
        kernel = _kernel(node)
        pads = _explicit_pads(node, x, kernel)
        spatial = len(x.shape) - 2
        pads[0], pads[spatial] = top, bottom
        attrs["pads"] = pads
        attrs.pop("auto_pad", None)   # (ceil_mode stays for the other axes: along rows the tile's pads end
        # exactly where its last window does, so ceil and floor agree)
    boxes[0] = xbox
    return BaseTile(boxes, attrs)


# ----------------------------------------------------------------------------------------------- matmul
def _gemm_axes(node: Node, opset: int) -> list[Axis]:
    a = data_input(node)
    y = node.outputs[0]
    k = a.shape[0] if int(node.attr("transA", 0)) else a.shape[1]
    return [Axis("M", 0, y.shape[0]), Axis("N", 1, y.shape[1]), Axis("K", None, k)]


def _gemm_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    a, b = node.inputs[0], node.inputs[1]
    assert a is not None and b is not None
    y = node.outputs[0]
    m0, m1 = bands.get("M", (0, y.shape[0]))
    n0, n1 = bands.get("N", (0, y.shape[1]))
    k0, k1 = bands.get("K", (0, a.shape[0] if int(node.attr("transA", 0)) else a.shape[1]))
    abox = ((k0, m0), (k1, m1)) if int(node.attr("transA", 0)) else ((m0, k0), (m1, k1))
    bbox = ((n0, k0), (n1, k1)) if int(node.attr("transB", 0)) else ((k0, n0), (k1, n1))
    c = node.inputs[2] if len(node.inputs) > 2 else None
    tile = BaseTile([abox, bbox, None], dict(node.attrs))
    if c is not None and k0 == 0:   # the bias joins the first partial sum only
        tile.inputs[2] = broadcast_box(c, ((m0, n0), (m1, n1)), y.shape)
    elif c is not None and opset < 11:   # C is required before opset 11: a zero bias
        tile.inputs[2] = ((0,), (1,))
        tile.replace[2] = np.zeros(1, dtype=np.asarray(c.const).dtype if c.const is not None else np.float32)
    return tile


def _matmul_axes(node: Node, opset: int) -> list[Axis]:
    a, b = node.inputs[0], node.inputs[1]
    assert a is not None and b is not None
    y = node.outputs[0]
    if len(a.shape) < 2 or len(b.shape) < 2:
        return []
    rank = len(y.shape)
    return [Axis("M", rank - 2, y.shape[-2]), Axis("N", rank - 1, y.shape[-1]), Axis("K", None, a.shape[-1])]


def _matmul_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    a, b = node.inputs[0], node.inputs[1]
    assert a is not None and b is not None
    y = node.outputs[0]
    m0, m1 = bands.get("M", (0, y.shape[-2]))
    n0, n1 = bands.get("N", (0, y.shape[-1]))
    k0, k1 = bands.get("K", (0, a.shape[-1]))
    abox = with_band(with_band(full(a), len(a.shape) - 2, m0, m1), len(a.shape) - 1, k0, k1)
    bbox = with_band(with_band(full(b), len(b.shape) - 2, k0, k1), len(b.shape) - 1, n0, n1)
    return BaseTile([abox, bbox], dict(node.attrs))


def _integer_matmul_axes(node: Node, opset: int) -> list[Axis]:
    """M and N only: a K tile's int32 partial sum would need an int32 Add on the device, and QLinearMatMul
    requantises only the whole sum, so the integer matmuls refuse K splits."""
    a, b, y = node.inputs[0], node.inputs[INTEGER_MATMUL_B[node.op_type]], node.outputs[0]
    if a is None or b is None or len(a.shape) < 2 or len(b.shape) < 2:
        return []
    rank = len(y.shape)
    return [Axis("M", rank - 2, y.shape[-2]), Axis("N", rank - 1, y.shape[-1])]


def _integer_matmul_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    """A, B (and their zero points and scales) of an M x N tile: A's rows, B's columns; a per-row zero point
    of A (MatMulInteger) takes the rows, a per-column scale or zero point of B takes the columns."""
    a_index, b_index = 0, INTEGER_MATMUL_B[node.op_type]
    a, b, y = node.inputs[a_index], node.inputs[b_index], node.outputs[0]
    assert a is not None and b is not None
    m0, m1 = bands.get("M", (0, y.shape[-2]))
    n0, n1 = bands.get("N", (0, y.shape[-1]))
    boxes: list[Box | None] = [None if v is None else full(v) for v in node.inputs]
    boxes[a_index] = with_band(full(a), len(a.shape) - 2, m0, m1)
    boxes[b_index] = with_band(full(b), len(b.shape) - 1, n0, n1)
    for i, v in enumerate(node.inputs):
        if v is None or len(v.shape) != 1 or v.shape[0] <= 1:
            continue
        if i in _PER_COLUMN_INPUTS[node.op_type]:
            boxes[i] = ((n0,), (n1,))
        elif i in _PER_ROW_INPUTS[node.op_type]:
            boxes[i] = ((m0,), (m1,))
    return BaseTile(boxes, dict(node.attrs))


# ----------------------------------------------------------------------------------------------- attention
def _attention_axes(node: Node, opset: int) -> list[Axis]:
    """Attention (4-D) is cut along batch, query heads (whole groups of the K/V head they share) and query
    rows. Each tile reads its queries and its heads' whole K and V: the kernel streams the keys through an
    online softmax, so no tile holds a score matrix. A causal node's row band does not start at row 0, so
    its tile takes the band's causal triangle as a constant mask instead of ``is_causal``."""
    q, k = node.inputs[0], node.inputs[1]
    assert q is not None and k is not None
    if len(q.shape) != 4 or len(k.shape) != 4:
        raise Untileable("Attention with 3-D Q, K, V")
    batch, heads, rows, _ = q.shape
    axes = [Axis("heads", 1, heads, heads // k.shape[1]), Axis("batch", 0, batch)]
    has_mask = len(node.inputs) > 3 and node.inputs[3] is not None
    if not (int(node.attr("is_causal", 0)) and has_mask):   # a causal band gets its rows' mask (below)
        axes.append(Axis("query rows", 2, rows))
    return [a for a in axes if a.extent > a.unit]


def _attention_tile(node: Node, bands: Bands, opset: int) -> BaseTile:
    q, k, v = node.inputs[0], node.inputs[1], node.inputs[2]
    assert q is not None and k is not None and v is not None
    group = q.shape[1] // k.shape[1]
    b0, b1 = bands.get("batch", (0, q.shape[0]))
    h0, h1 = bands.get("heads", (0, q.shape[1]))
    r0, r1 = bands.get("query rows", (0, q.shape[2]))
    qbox = ((b0, h0, r0, 0), (b1, h1, r1, q.shape[3]))
    kv = [((b0, h0 // group, 0, 0), (b1, h1 // group) + tuple(x.shape[2:])) for x in (k, v)]
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    scores = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    boxes: list[Box | None] = [qbox, *kv]
    if mask is not None:
        boxes.append(broadcast_box(mask, ((b0, h0, r0, 0), (b1, h1, r1, k.shape[2])), scores))
    tile = BaseTile(boxes, dict(node.attrs))
    if int(node.attr("is_causal", 0)) and "query rows" in bands:
        keys = np.arange(k.shape[2])[None, :]
        band = np.arange(r0, r1)[:, None]
        tile.attrs.pop("is_causal")
        tile.inputs.append(((0, 0), (r1 - r0, k.shape[2])))
        tile.replace[3] = np.where(keys > band, -np.inf, 0).astype(np_dtype(q.dtype))
    return tile


RULES: dict[str, Rule] = {
    **{op: Rule(_window_axes, _window_tile) for op in ("Conv", "MaxPool", "AveragePool", "ConvTranspose")},
    "Gemm": Rule(_gemm_axes, _gemm_tile),
    "MatMul": Rule(_matmul_axes, _matmul_tile),
    **{op: Rule(_window_axes, _window_tile) for op in ("QLinearConv", "ConvInteger")},
    **{op: Rule(_integer_matmul_axes, _integer_matmul_tile) for op in INTEGER_MATMUL_B},
    "Attention": Rule(_attention_axes, _attention_tile),
    **FREE_AXIS_RULES,
}
