"""Each tiling rule, cut by hand (``cut_node``), computes in onnxruntime what the uncut node does, on seeded
fan-in-scaled random weights; and the tiles read what the rule says (halo, pads, weight slices)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from hetc.ir.fused import base_node, is_fused
from hetc.ir.tiles import region_bounds
from hetc.target.tiling import Untileable, cut_node

from tiler_helpers import aliases, assert_same_outputs, load, make_model, tiles_of

mk = helper.make_node


def _conv(c=8, m=16, hw=20, k=3, group=1, **attrs):
    model = make_model([mk("Conv", ["x", "w", "b"], ["y"], name="conv", group=group, **attrs)],
                       {"x": (1, c, hw, hw)}, ["y"], {"w": (m, c // group, k, k), "b": (m,)})
    return load(model)


def test_conv_rows_carry_the_halo_and_pads_only_at_the_edges():
    graph = _conv(pads=[1, 1, 1, 1])
    tiled = cut_node(graph, "conv", [("rows", 4)])
    tiles = tiles_of(tiled, "conv")
    assert [t.attrs["pads"] for t in tiles] == [[1, 1, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1]]
    regions = sorted(region_bounds(r) for r in aliases(tiled, "Region"))
    # output rows 0-4, 5-9, 10-14, 15-19 read input rows 0-5, 4-10, 9-15, 14-19 (one row of halo each side)
    assert [(s[2], e[2]) for s, e in regions] == [(0, 6), (4, 11), (9, 16), (14, 20)]
    assert [t.tile.index for t in tiles] == [0, 1, 2, 3] and {t.tile.count for t in tiles} == {4}
    assembled = aliases(tiled, "Assemble")
    assert len(assembled) == 1 and assembled[0].outputs[0].name == "y" and assembled[0].attrs["axis"] == 2
    assert_same_outputs(graph, tiled)


@pytest.mark.parametrize("attrs", [dict(strides=[2, 2], pads=[1, 1, 1, 1]),
                                   dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
                                   dict(strides=[2, 2], dilations=[2, 2], pads=[0, 1, 2, 1]),
                                   dict(auto_pad="SAME_UPPER", strides=[2, 2])])
def test_conv_rows_with_strides_and_dilations(attrs):
    graph = _conv(hw=23, **attrs)
    assert_same_outputs(graph, cut_node(graph, "conv", [("rows", 3)]))


def test_conv_channels_slice_weights_and_bias_and_keep_the_input_whole():
    graph = _conv(pads=[1, 1, 1, 1])
    tiled = cut_node(graph, "conv", [("channels", 4)])
    assert not aliases(tiled, "Region")   # every channel tile reads the whole input
    conv = next(n for n in graph.nodes if n.op_type == "Conv")
    packed = np.asarray(conv.inputs[1].const)   # (the bias travels in the weight: one row per output channel)
    for k, t in enumerate(tiles_of(tiled, "conv")):
        w, b = base_node(t).inputs[1], base_node(t).inputs[2]
        assert len(t.inputs) == 2 and w.shape == (4, 8, 3, 3) and b.shape == (4,)
        np.testing.assert_array_equal(t.inputs[1].const, packed[4 * k:4 * k + 4])
    assert_same_outputs(graph, tiled)


def test_depthwise_and_grouped_convs_slice_input_channels_too():
    depthwise = _conv(c=16, m=32, group=16, pads=[1, 1, 1, 1])
    tiled = cut_node(depthwise, "conv", [("channels", 4), ("rows", 2)])
    tile = tiles_of(tiled, "conv")[0]
    assert tile.attrs["group"] == 4 and tile.inputs[0].shape[1] == 4
    assert_same_outputs(depthwise, tiled)
    grouped = _conv(c=16, m=16, group=4, pads=[1, 1, 1, 1])
    assert_same_outputs(grouped, cut_node(grouped, "conv", [("channels", 2)]))


def test_rows_by_channels_nest_two_assembles():
    graph = _conv(pads=[1, 1, 1, 1])
    tiled = cut_node(graph, "conv", [("channels", 2), ("rows", 3)])
    assembled = aliases(tiled, "Assemble")
    assert sorted(a.attrs["axis"] for a in assembled) == [1, 2, 2]
    assert len(tiles_of(tiled, "conv")) == 6
    assert_same_outputs(graph, tiled)


@pytest.mark.parametrize("cuts", [[("channels", 3), ("rows", 4)], [("rows", 4), ("channels", 3)]])
def test_tiles_reading_one_row_band_come_back_to_back_and_cycle_through_the_weight_slices(cuts):
    graph = _conv(pads=[1, 1, 1, 1])
    tiled = cut_node(graph, "conv", cuts)
    tiles = sorted(tiles_of(tiled, "conv"), key=lambda t: t.tile.index)
    bands = [t.inputs[0].name for t in tiles]
    weights = [t.inputs[1].name for t in tiles]
    assert bands == [b for b in dict.fromkeys(bands) for _ in range(3)]   # each band read by 3 tiles in a row
    assert weights == list(dict.fromkeys(weights)) * 4                    # the 3 slices, once per band
    assert_same_outputs(graph, tiled)


def test_fused_epilogue_slices_the_residual_like_the_output():
    model = make_model([mk("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                        mk("Add", ["c", "r"], ["s"], name="add"), mk("Relu", ["s"], ["y"], name="relu")],
                       {"x": (1, 8, 16, 16), "r": (1, 16, 16, 16)}, ["y"],
                       {"w": (16, 8, 3, 3), "b": (16,)})
    graph = load(model)
    fused = next(n for n in graph.nodes if is_fused(n))
    tiled = cut_node(graph, fused.name, [("channels", 2), ("rows", 2)])
    residual_regions = [r for r in aliases(tiled, "Region") if r.inputs[0].name == "r"]
    assert sorted((region_bounds(r)[0][1:3], region_bounds(r)[1][1:3]) for r in residual_regions) == [
        ((0, 0), (8, 8)), ((0, 8), (8, 16)), ((8, 0), (16, 8)), ((8, 8), (16, 16))]
    assert_same_outputs(graph, tiled)


@pytest.mark.parametrize("op,attrs", [("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
                                      ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
                                      ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
                                      ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
                                      ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                                           count_include_pad=1))])
def test_pools_by_rows_and_channels(op, attrs):
    model = make_model([mk(op, ["x"], ["y"], name="pool", **attrs)], {"x": (1, 6, 21, 21)}, ["y"], {})
    graph = load(model)
    assert_same_outputs(graph, cut_node(graph, "pool", [("rows", 4)]))
    assert_same_outputs(graph, cut_node(graph, "pool", [("channels", 3), ("rows", 2)]))


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("cuts", [[("M", 3)], [("N", 4)], [("K", 3)], [("N", 2), ("K", 4)], [("M", 2), ("K", 2)]])
def test_gemm_by_m_n_and_k(trans_a, trans_b, cuts):
    m, k, n = 6, 40, 24
    a = (k, m) if trans_a else (m, k)
    b = (n, k) if trans_b else (k, n)
    model = make_model([mk("Gemm", ["a", "b", "c"], ["y"], name="gemm", transA=trans_a, transB=trans_b,
                           alpha=0.5, beta=2.0)], {"a": a}, ["y"], {"b": b, "c": (n,)})
    graph = load(model)
    tiled = cut_node(graph, "gemm", cuts)
    if any(axis == "K" for axis, _n in cuts):
        chain = [t for t in tiles_of(tiled, "gemm") if is_fused(t)]
        assert chain and all(t.attrs["epilogue"][0] == "Add" for t in chain)   # partial sums carried on
    assert_same_outputs(graph, tiled)


def test_matmul_k_chain_keeps_the_fused_bias_and_activation_for_the_last_tile():
    model = make_model([mk("MatMul", ["a", "w"], ["m"], name="mm"), mk("Add", ["m", "bias"], ["s"], name="add"),
                        mk("Relu", ["s"], ["y"], name="relu")],
                       {"a": (2, 5, 64)}, ["y"], {"w": (64, 32), "bias": (32,)})
    graph = load(model)
    fused = next(n for n in graph.nodes if is_fused(n))
    tiled = cut_node(graph, fused.name, [("N", 2), ("K", 4)])
    chains = tiles_of(tiled, fused.name)
    lasts = [t for t in chains if "Relu" in t.attrs.get("epilogue", [])]
    # the partial sum, the bias (packed into the weight: the last K tile reads its slice's bias row), Relu
    assert len(lasts) == 2 and all(t.attrs["epilogue"] == ["Add", "Add from='weight'", "Relu"] for t in lasts)
    assert all(t.inputs[1].shape == (16 + 1, 16) for t in lasts)
    assert_same_outputs(graph, tiled)
    assert_same_outputs(graph, cut_node(graph, fused.name, [("M", 5)]))


def test_broadcast_operands_are_not_sliced_along_broadcast_axes():
    model = make_model([mk("Mul", ["x", "s"], ["m"], name="mul"), mk("Add", ["m", "x2"], ["y"], name="add")],
                       {"x": (1, 8, 16, 16), "x2": (1, 1, 16, 16)}, ["y"],
                       {"s": np.linspace(0.5, 2, 8, dtype=np.float32).reshape(1, 8, 1, 1)})
    graph = load(model)
    tiled = cut_node(graph, "mul", [("channels", 2), ("rows", 2)])
    scales = {t.inputs[1].shape for t in tiles_of(tiled, "mul")}
    assert scales == {(1, 4, 1, 1)}   # channels sliced, rows (broadcast) whole
    tiled = cut_node(tiled, "add", [("channels", 4)])
    assert not [r for r in aliases(tiled, "Region") if r.inputs[0].name == "x2"]   # broadcast along channels
    assert_same_outputs(graph, tiled)


def test_normalisations_softmax_and_global_pools_cut_along_free_axes():
    scale = np.linspace(0.5, 1.5, 8, dtype=np.float32)
    model = make_model([mk("BatchNormalization", ["x", "g", "bb", "mu", "var"], ["n"], name="bn"),
                        mk("LRN", ["n"], ["l"], name="lrn", size=3),
                        mk("Softmax", ["l"], ["s"], name="softmax", axis=1),
                        mk("GlobalAveragePool", ["s"], ["y"], name="gap")],
                       {"x": (1, 8, 12, 12)}, ["y"],
                       {"g": scale, "bb": scale - 1, "mu": scale / 4, "var": scale})
    graph = load(model)
    names = {n.op_type: n.name for n in graph.nodes}
    tiled = graph
    for op, cuts in (("BatchNormalization", [("channels", 4)]), ("LRN", [("rows", 3)]),
                     ("Softmax", [("rows", 2)]), ("GlobalAveragePool", [("channels", 2)])):
        if op in names:
            tiled = cut_node(tiled, names[op], cuts)
    with pytest.raises(Untileable):
        cut_node(graph, names["Softmax"], [("channels", 2)])   # the reduced axis is not free
    assert_same_outputs(graph, tiled)


def test_layernorm_concat_transpose_pad_resize():
    model = make_model([mk("LayerNormalization", ["x", "g", "b"], ["n"], name="ln", axis=-1),
                        mk("Concat", ["n", "x"], ["c"], name="concat", axis=1),
                        mk("Transpose", ["c"], ["t"], name="transpose", perm=[0, 2, 1, 3]),
                        mk("Pad", ["t", "pads"], ["p"], name="pad"),
                        mk("Resize", ["p", "", "scales"], ["y"], name="resize", mode="nearest")],
                       {"x": (1, 4, 6, 8)}, ["y"],
                       {"g": (8,), "b": (8,), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                        "scales": np.array([1, 1, 2, 2], np.float32)})
    graph = load(model)
    tiled = graph
    for name, cuts in (("ln", [("channels", 2), ("rows", 3)]), ("concat", [("rows", 2)]),
                       ("transpose", [("channels", 3)]), ("pad", [("channels", 2)]),
                       ("resize", [("channels", 3)])):
        tiled = cut_node(tiled, name, cuts)
    assert_same_outputs(graph, tiled)


@pytest.mark.parametrize("op, inputs, consts", [
    ("Resize", ["x", "", "scales"], {"scales": np.array([1, 1, 2, 2], np.float32)}),
    ("Resize", ["x", "", "", "sizes"], {"sizes": np.array([1, 6, 4, 5], np.int64)}),
    ("Pad", ["x", "pads"], {"pads": np.array([0, 0, 1, 2, 0, 0, 3, 1], np.int64)}),
])
def test_ops_that_resize_axes_read_the_inputs_whole_extent_there(op, inputs, consts):
    # onnxruntime clamps an oversized Slice, so comparing outputs alone missed a data region typed with the
    # output's extent (hetc's kernels then computed a wrongly shaped tile: PP-OCR's upsampling on multi-npu).
    model = make_model([mk(op, inputs, ["y"], name="op", **({"mode": "linear"} if op == "Resize" else {}))],
                       {"x": (1, 6, 8, 10)}, ["y"], consts)
    graph = load(model)
    tiled = cut_node(graph, "op", [("channels", 3)])
    assert [t.inputs[0].shape for t in tiles_of(tiled, "op")] == [(1, 2, 8, 10)] * 3
    assert_same_outputs(graph, tiled)


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_by_output_channels(group):
    model = make_model([mk("ConvTranspose", ["x", "w", "b"], ["y"], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1],
                           group=group)],
                       {"x": (1, 8, 7, 7)}, ["y"], {"w": (8, 12 // group, 3, 3), "b": (12,)})
    graph = load(model)
    tiled = cut_node(graph, "deconv", [("channels", 2)])
    assert all(t.inputs[2].shape == (6,) for t in tiles_of(tiled, "deconv"))
    assert_same_outputs(graph, tiled)
    with pytest.raises(Untileable):
        cut_node(graph, "deconv", [("rows", 2)])
