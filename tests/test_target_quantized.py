"""Capability and cost of the integer ops: where QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger and
Quantize/DequantizeLinear may run on the presets, why not elsewhere, and their price at the int8 rate."""
from __future__ import annotations

import pytest

from hetc.ir import Node
from hetc.target import load_target, node_bytes, node_cost_ns, node_flops
from hetc.target.cost import compute_dtype, node_class, peak_for
from target_helpers import node, val


def qlinear_conv(act: str = "uint8", cin: int = 64, cout: int = 64, size: int = 28, kernel: int = 3,
                 group: int = 1, per_channel: bool = True) -> Node:
    channels = cout if per_channel else 1
    inputs = [val("x", (1, cin, size, size), act), val("xs", (), "float32", True), val("xz", (), act, True),
              val("w", (cout, cin // group, kernel, kernel), "int8", True),
              val("ws", (channels,), "float32", True), val("wz", (channels,), "int8", True),
              val("ys", (), "float32", True), val("yz", (), act, True), val("b", (cout,), "int32", True)]
    return node("QLinearConv", inputs, [val("y", (1, cout, size, size), act)], group=group,
                pads=[kernel // 2] * 4)


def float_conv(cin: int = 64, cout: int = 64, size: int = 28, kernel: int = 3) -> Node:
    return node("Conv", [val("x", (1, cin, size, size)), val("w", (cout, cin, kernel, kernel), const=True),
                         val("b", (cout,), const=True)], [val("y", (1, cout, size, size))], pads=[kernel // 2] * 4)


def qlinear_matmul(act: str = "int8") -> Node:
    inputs = [val("a", (1, 128, 256), act), val("as", (), "float32", True), val("az", (), act, True),
              val("b", (256, 512), "int8", True), val("bs", (512,), "float32", True),
              val("bz", (512,), "int8", True), val("ys", (), "float32", True), val("yz", (), act, True)]
    return node("QLinearMatMul", inputs, [val("y", (1, 128, 512), act)])


@pytest.fixture(scope="module")
def edge():
    return load_target("edge-soc")


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_integer_convolution_runs_on_the_npu_not_the_dsp(edge, act):
    n = qlinear_conv(act)
    assert edge.supports(n, "npu")
    refusal = edge.supports(n, "dsp")
    assert not refusal and refusal.code == "op" and "not in dsp's op list" in refusal.message


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_integer_matmul_runs_on_npu_and_dsp(edge, act):
    n = qlinear_matmul(act)
    assert edge.supports(n, "npu") and edge.supports(n, "dsp")
    integer = node("MatMulInteger", [val("a", (64, 256), act), val("b", (256, 64), "int8", True),
                                     val("az", (), act, True)], [val("y", (64, 64), "int32")])
    assert edge.supports(integer, "npu") and edge.supports(integer, "dsp")


def test_per_tensor_and_per_channel_weights_both_run(edge):
    assert edge.supports(qlinear_conv(per_channel=False), "npu")
    assert edge.supports(qlinear_conv(per_channel=True), "npu")


def test_depthwise_integer_conv_runs_and_grouped_one_is_refused_by_the_preset_limit(edge):
    assert edge.supports(qlinear_conv(cin=64, cout=64, group=64), "npu")
    refusal = edge.supports(qlinear_conv(cin=64, cout=64, group=4), "npu")
    assert not refusal and "grouped (group = 4) QLinearConv" in refusal.message and "grouped_conv" in refusal.message


def test_a_16_bit_or_4_bit_quantised_operand_is_refused_with_the_device_dtypes(edge):
    n = node("QuantizeLinear", [val("x", (1, 64)), val("s", (), "float32", True), val("z", (), "uint16", True)],
             [val("y", (1, 64), "uint16")])
    refusal = edge.supports(n, "npu")
    assert not refusal and refusal.code == "dtype" and "uint16" in refusal.message and "int8" in refusal.message
    assert edge.supports(n, "dsp")   # the DSP has an int16 datapath
    n4 = node("DequantizeLinear", [val("x", (1, 64), "int4"), val("s", (), "float32", True)], [val("y", (1, 64))])
    assert not edge.supports(n4, "dsp")


def test_integer_ops_cost_at_the_int8_rate(edge):
    q, f = qlinear_conv("uint8"), float_conv()
    assert compute_dtype(q) == "uint8" and peak_for(edge.devices["npu"], "uint8") == 4096.0
    assert node_flops(q) == 2 * 64 * 28 * 28 * 64 * 9
    assert node_class(q) == "conv" and node_class(qlinear_conv(group=64, cin=64, cout=64)) == "depthwise"
    integer = node("ConvInteger", [val("x", (1, 64, 28, 28), "uint8"), val("w", (64, 64, 3, 3), "int8", True),
                                   val("xz", (), "uint8", True)],
                   [val("y", (1, 64, 28, 28), "int32")], pads=[1] * 4)
    assert compute_dtype(integer) == "uint8" and node_flops(integer) == node_flops(q)
    # 4096 int8 GOP/s against 256 fp32 on the NPU: the compute part is 16x shorter.
    launch = edge.devices["npu"].launch_ns
    assert (node_cost_ns(edge, f, "npu") - launch) / (node_cost_ns(edge, q, "npu") - launch) == pytest.approx(16, rel=0.05)


def test_integer_tensors_count_one_byte_per_element():
    q, f = qlinear_conv("int8", per_channel=False), float_conv()
    activations = 2 * 64 * 28 * 28
    weights = 64 * 64 * 9
    assert node_bytes(f) == 4 * (activations + weights + 64)
    assert node_bytes(q) == activations + weights + 4 * 64 + 3 * 4 + 3   # int32 bias, 3 float32 scales, zps
