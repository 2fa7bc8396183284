"""Tiling the integer ops: QLinearConv / ConvInteger cut by rows and channels (the weight, per-channel scale,
zero point and bias slices move with the channel cut), QLinearMatMul / MatMulInteger by M and N (no K: the
requantisation needs the whole int32 sum), Quantize/DequantizeLinear along any axis. Every cut computes in
onnxruntime exactly what the uncut node does, and an int8 tile is four times smaller than an fp32 one."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from conftest import MODELS_DIR, REPO
from hetc.api import validate
from hetc.target import load_target, target_from_toml_text
from hetc.target.capability import working_set_bytes
from hetc.target.tiling import cut_node
from hetc.target.tiling import TilePlan, plan_node
from hetc.target.tiling.rules import RULES

from tiler_helpers import assert_same_outputs, load, make_model, tiles_of

mk = helper.make_node


def _params(rng: np.random.Generator, m: int, c: int, k: int, per_channel: bool) -> dict[str, np.ndarray]:
    w = rng.integers(-127, 128, (m, c, k, k), dtype=np.int8)
    channels = m if per_channel else 1
    ws = (rng.uniform(0.5, 1.5, channels) / (127 * np.sqrt(c * k * k))).astype(np.float32)
    return {"w": w, "ws": ws.reshape(-1) if per_channel else ws.reshape(()), "wz": np.zeros(ws.shape if per_channel
            else (), np.int8), "xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8), "ys": np.array(0.03, np.float32),
            "yz": np.array(120, np.uint8), "b": rng.integers(-2000, 2000, m).astype(np.int32)}


def _qconv(c=8, m=16, hw=20, k=3, group=1, per_channel=True, **attrs):
    rng = np.random.default_rng(3)
    weights = _params(rng, m, c // group, k, per_channel)
    nodes = [mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant"),
             mk("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["yq"], name="qconv",
                group=group, **attrs),
             mk("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dequant")]
    return load(make_model(nodes, {"x": (1, c, hw, hw)}, ["y"], weights, opset=13))


@pytest.mark.parametrize("cuts", [[("rows", 4)], [("channels", 4)], [("channels", 2), ("rows", 3)]])
@pytest.mark.parametrize("per_channel", [True, False])
def test_qlinear_conv_tiles_compute_exactly_what_the_node_does(cuts, per_channel):
    graph = _qconv(pads=[1, 1, 1, 1], per_channel=per_channel)
    tiled = cut_node(graph, "qconv", cuts)
    assert len(tiles_of(tiled, "qconv")) == np.prod([n for _a, n in cuts])
    assert_same_outputs(graph, tiled, rtol=0)


def test_channel_tiles_slice_the_per_channel_scales_zero_points_and_bias():
    tiled = cut_node(_qconv(pads=[1, 1, 1, 1]), "qconv", [("channels", 4)])
    for t in tiles_of(tiled, "qconv"):
        w, ws, wz, b = t.inputs[3], t.inputs[4], t.inputs[5], t.inputs[8]
        assert w.shape == (4, 8, 3, 3) and ws.shape == (4,) and wz.shape == (4,) and b.shape == (4,)
        assert t.inputs[1].shape == () and t.inputs[6].shape == ()   # scalar scales stay whole


def test_depthwise_qlinear_conv_tiles_by_channel_groups():
    graph = _qconv(c=16, m=16, group=16, pads=[1, 1, 1, 1], strides=[2, 2])
    tiled = cut_node(graph, "qconv", [("channels", 4), ("rows", 2)])
    assert tiles_of(tiled, "qconv")[0].attrs["group"] == 4
    assert_same_outputs(graph, tiled, rtol=0)


def _qmatmul(per_column: bool = True):
    rng = np.random.default_rng(5)
    n = 24
    bs = (rng.uniform(0.5, 1.5, n if per_column else 1) / (127 * 8)).astype(np.float32)
    weights = {"b": rng.integers(-127, 128, (64, n), dtype=np.int8), "bs": bs if per_column else bs.reshape(()),
               "bz": np.zeros(n if per_column else (), np.int8), "as": np.array(0.02, np.float32), "az": np.array(3, np.int8),
               "ys": np.array(0.05, np.float32), "yz": np.array(-2, np.int8)}
    nodes = [mk("QuantizeLinear", ["x", "as", "az"], ["xq"], name="quant"),
             mk("QLinearMatMul", ["xq", "as", "az", "b", "bs", "bz", "ys", "yz"], ["yq"], name="qmm"),
             mk("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dequant")]
    return load(make_model(nodes, {"x": (16, 64)}, ["y"], weights, opset=13))


@pytest.mark.parametrize("cuts", [[("M", 4)], [("N", 3)], [("M", 2), ("N", 2)]])
def test_qlinear_matmul_tiles_by_rows_and_columns_exactly(cuts):
    graph = _qmatmul()
    assert_same_outputs(graph, cut_node(graph, "qmm", cuts), rtol=0)


def test_integer_matmuls_refuse_k_splits():
    graph = _qmatmul()
    node = next(n for n in graph.nodes if n.name == "qmm")
    assert [a.name for a in RULES["QLinearMatMul"].axes(node, 13)] == ["M", "N"]


def test_quantize_tiles_slice_per_axis_scales():
    rng = np.random.default_rng(2)
    scales = (rng.uniform(0.01, 0.05, 8)).astype(np.float32)
    nodes = [mk("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant", axis=1),
             mk("DequantizeLinear", ["q", "s", "z"], ["y"], name="dequant", axis=1)]
    graph = load(make_model(nodes, {"x": (1, 8, 6, 6)}, ["y"], {"s": scales, "z": np.zeros(8, np.uint8)}, opset=13))
    tiled = cut_node(cut_node(graph, "quant", [("channels", 2)]), "dequant", [("rows", 3)])
    assert {t.inputs[1].shape for t in tiles_of(tiled, "quant")} == {(4,)}
    assert_same_outputs(graph, tiled, rtol=0)


def test_an_int8_convolution_needs_a_quarter_of_the_bytes_and_fits_where_its_fp32_twin_is_cut():
    target = load_target("edge-soc")
    quantized = next(n for n in _qconv(c=64, m=64, hw=160, pads=[1, 1, 1, 1]).nodes if n.name == "qconv")
    twin_graph = load(make_model([mk("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                                 {"x": (1, 64, 160, 160)}, ["y"], {"w": (64, 64, 3, 3), "b": (64,)}))
    twin = next(n for n in twin_graph.nodes if n.name == "conv")
    activations_and_weights = 2 * 64 * 160 * 160 + 64 * 64 * 9
    assert working_set_bytes(twin) == 4 * activations_and_weights + 4 * 64
    # int8 x, y, w; int32 bias; per-channel float32 scales and int8 zero points; scalar scales/zero points
    assert working_set_bytes(quantized) == activations_and_weights + 4 * 64 + 4 * 64 + 64 + 2 * (4 + 1)
    assert isinstance(plan_node(target, twin, 17), TilePlan)          # 13 MB > 8 MiB: cut
    assert not isinstance(plan_node(target, quantized, 13), TilePlan)  # 3.3 MB: runs whole


def test_a_quantized_model_tiled_for_a_small_scratchpad_still_matches_onnxruntime_exactly():
    """The QOperator MobileNetV2 on edge-soc with a 48 KiB NPU SRAM: its early QLinearConvs are cut into row and
    channel tiles, and the outputs stay identical to onnxruntime's."""
    text = (REPO / "hetc" / "target" / "presets" / "edge-soc.toml").read_text()
    small = target_from_toml_text(text.replace('size = "8MiB"', 'size = "48KiB"', 1))
    result = validate(MODELS_DIR / "mobilenet_v2_qoperator.onnx", target=small, scheduler="heft")
    tiled = {n.tile.of for n in result.graph.nodes if n.tile is not None and n.op_type == "QLinearConv"}
    assert len(tiled) >= 3
    assert result.validation.passed and result.validation.max_abs_err == 0.0
