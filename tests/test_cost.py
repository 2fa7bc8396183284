"""The cost model: operation and byte counts checked by hand, the roofline formula, monotonicity, coverage."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from hetc.ir import Node
from hetc.target import load_target, node_bytes, node_class, node_cost_ns, node_flops, op_class, \
    target_from_toml_text
from hetc.target.cost import efficiency_for, peak_for
from hetc.target.flops import DIV_OPS, TRANSCENDENTAL_OPS
from hetc.target.ops import KERNEL_SET, OP_CLASSES, is_view
from target_helpers import MINI_TOML, conv, node, unary, val

PRESETS = ["cpu-only", "edge-soc", "multi-npu"]


# ------------------------------------------------------------------------------------------------ flops by hand
def test_conv_flops() -> None:
    # Y is 1x4x8x8 = 256 outputs, each a 3 (channels) x 3 x 3 window: 256 x 27 = 6,912 MACs = 13,824 ops.
    assert node_flops(conv((1, 3, 8, 8), (4, 3, 3, 3), (1, 4, 8, 8), pads=[1, 1, 1, 1])) == 13_824
    # The bias adds one op per output.
    assert node_flops(conv((1, 3, 8, 8), (4, 3, 3, 3), (1, 4, 8, 8), bias=True, pads=[1, 1, 1, 1])) == 14_080


def test_grouped_and_depthwise_conv_flops() -> None:
    # Depthwise: 8 x 8 x 8 = 512 outputs x 9 taps of a single channel = 4,608 MACs.
    depthwise = conv((1, 8, 10, 10), (8, 1, 3, 3), (1, 8, 8, 8), group=8)
    assert node_flops(depthwise) == 9_216
    assert node_class(depthwise) == "depthwise"
    # Two groups of 4 channels, 1x1 kernel: 4 x 6 x 6 = 144 outputs x 4 channels = 576 MACs.
    grouped = conv((1, 8, 6, 6), (4, 4, 1, 1), (1, 4, 6, 6), group=2)
    assert node_flops(grouped) == 1_152
    assert node_class(grouped) == "conv"


def test_conv_transpose_flops() -> None:
    # 2 x 3 x 3 = 18 inputs, each scattered into 4 output channels x 2 x 2 taps = 16: 288 MACs.
    deconv = node("ConvTranspose", [val("x", (1, 2, 3, 3)), val("w", (2, 4, 2, 2), const=True)],
                  [val("y", (1, 4, 6, 6))], strides=[2, 2])
    assert node_flops(deconv) == 576


def test_gemm_flops() -> None:
    # 2x3 @ 3x5: 10 outputs x 3 MACs = 30 MACs = 60 ops, plus 10 for adding C.
    gemm = node("Gemm", [val("a", (2, 3)), val("b", (3, 5), const=True), val("c", (5,), const=True)],
                [val("y", (2, 5))])
    assert node_flops(gemm) == 70
    transposed = node("Gemm", [val("a", (3, 2)), val("b", (3, 5), const=True)], [val("y", (2, 5))], transA=1)
    assert node_flops(transposed) == 60


@pytest.mark.parametrize("a, b, y, expected", [
    ((4, 2, 3), (3, 5), (4, 2, 5), 240),            # batched: 40 outputs x 3 MACs x 2
    ((3,), (3, 5), (5,), 30),                        # vector-matrix
    ((2, 1, 4, 3), (5, 3, 6), (2, 5, 4, 6), 1_440),  # broadcast batch: 240 outputs x 3 x 2
])
def test_matmul_flops(a: tuple, b: tuple, y: tuple, expected: int) -> None:
    assert node_flops(node("MatMul", [val("a", a), val("b", b)], [val("y", y)])) == expected


def _reference_macs(op: str, x: tuple, w: tuple, **attrs: object) -> tuple[int, tuple[int, ...]]:
    """MACs counted by running the op in onnx.reference on all-ones data: without padding each output element
    equals the number of products summed into it."""
    graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], **attrs)], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x)),
                               helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, list(w))],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (y,) = ReferenceEvaluator(model).run(None, {"x": np.ones(x, np.float32), "w": np.ones(w, np.float32)})
    return int(y.sum()), y.shape


@pytest.mark.parametrize("op, x, w, attrs", [
    ("Conv", (1, 3, 7, 7), (4, 3, 3, 3), {}),
    ("Conv", (1, 6, 9, 9), (6, 1, 3, 3), {"group": 6}),
    ("Conv", (2, 8, 5, 5), (4, 4, 2, 2), {"group": 2, "strides": [2, 2]}),
    ("MatMul", (3, 2, 4), (4, 5), {}),
])
def test_flops_agree_with_products_counted_by_the_onnx_reference(op: str, x: tuple, w: tuple, attrs: dict) -> None:
    macs, y_shape = _reference_macs(op, x, w, **attrs)
    n = node(op, [val("x", x), val("w", w, const=True)], [val("y", y_shape)], **attrs)
    assert node_flops(n) == 2 * macs


def test_pointwise_pool_norm_and_reduce_flops() -> None:
    add = node("Add", [val("a", (4, 1)), val("b", (1, 5))], [val("c", (4, 5))])
    assert node_flops(add) == 20  # one add per broadcast output element
    assert node_flops(unary("Softmax", (2, 10))) == 20 * (4 + TRANSCENDENTAL_OPS)
    assert node_flops(unary("Div", (7,))) == 7 * DIV_OPS
    pool = node("MaxPool", [val("x", (1, 1, 4, 4))], [val("y", (1, 1, 2, 2))], kernel_shape=[2, 2], strides=[2, 2])
    assert node_flops(pool) == 16
    gap = node("GlobalAveragePool", [val("x", (1, 8, 4, 4))], [val("y", (1, 8, 1, 1))])
    assert node_flops(gap) == 128 + 8 * DIV_OPS
    mean = node("ReduceMean", [val("x", (4, 5))], [val("y", (4, 1))])
    assert node_flops(mean) == 20  # one op per input element
    total = node("Sum", [val("a", (6,)), val("b", (6,)), val("c", (6,))], [val("y", (6,))])
    assert node_flops(total) == 12  # two adds per element
    resize = node("Resize", [val("x", (1, 1, 4, 4)), None, val("s", (4,), const=True)], [val("y", (1, 1, 8, 8))],
                  mode="linear")
    assert node_flops(resize) == 64 * 4 * 2  # 2^2 taps per output, one MAC each
    assert node_flops(unary("Transpose", (3, 4), perm=[1, 0])) == 0


def test_attention_flops_are_the_same_for_3d_and_4d_inputs() -> None:
    # 2 batches, 4 query heads of 8 over 3 queries, 2 key/value heads (grouped) over 5 keys; value heads of 6.
    four_d = node("Attention", [val("q", (2, 4, 3, 8)), val("k", (2, 2, 5, 8)), val("v", (2, 2, 5, 6))],
                  [val("y", (2, 4, 3, 6))])
    three_d = node("Attention", [val("q", (2, 3, 32)), val("k", (2, 5, 16)), val("v", (2, 5, 12))],
                   [val("y", (2, 3, 24))], q_num_heads=4, kv_num_heads=2)
    # Q.K^T and P.V: 2 x 2 x 4 x 3 x 5 x (8 + 6) MACs x 2 ops; softmax 5 + T per score, one divide per output
    scores = 2 * 4 * 3 * 5
    assert node_flops(four_d) == node_flops(three_d) > 2 * scores * (8 + 6) + scores * 5 + 2 * 4 * 3 * 6


def test_bytes() -> None:
    # x 768 + w 432 + y 1,024 bytes.
    assert node_bytes(conv((1, 3, 8, 8), (4, 3, 3, 3), (1, 4, 8, 8), pads=[1, 1, 1, 1])) == 2_224
    x = val("x", (1000,))
    assert node_bytes(node("Mul", [x, x], [val("y", (1000,))])) == 8_000  # x is read once
    assert node_bytes(node("Reshape", [val("x", (4, 4)), val("s", (1,), "int64", const=True)],
                           [val("y", (16,))])) == 0  # aliased in place by the planner
    gather = node("Gather", [val("table", (100, 16)), val("idx", (3,), "int64")], [val("rows", (3, 16))])
    assert node_bytes(gather) == 2 * 192 + 24  # reads the 3 rows it keeps and the indices, writes 3 rows


def test_op_classes() -> None:
    assert [op_class(op) for op in ("Conv", "MatMul", "Add", "Relu", "MaxPool", "LRN", "ReduceSum", "Softmax",
                                    "Concat", "NonMaxSuppression")] == list(OP_CLASSES)
    assert all(op_class(op) != "other" for op in KERNEL_SET)


# ------------------------------------------------------------------------------------------------ roofline
@pytest.fixture(scope="module")
def mini():
    return target_from_toml_text(MINI_TOML, "mini")


def test_roofline_by_hand(mini) -> None:
    relu = unary("Relu", (1000,))
    # acc: compute 1,000 ops / (100 x 0.25) = 40 ns < memory 8,000 B / 100 GB/s = 80 ns; plus launch 100.
    assert node_cost_ns(mini, relu, "acc") == pytest.approx(180.0)
    # cpu: compute 1,000 / (10 x 0.5) = 200 ns < memory 8,000 / 10 = 800 ns; plus launch 1,000.
    assert mini.cost(relu, "cpu") == pytest.approx(1_800.0)
    # A compute-bound conv: 13,824 / (100 x 0.5) = 276.48 ns > 2,224 / 100 = 22.24 ns.
    dense = conv((1, 3, 8, 8), (4, 3, 3, 3), (1, 4, 8, 8), pads=[1, 1, 1, 1])
    assert mini.cost(dense, "acc") == pytest.approx(100 + 276.48)
    # A depthwise conv uses the conv efficiency where no "depthwise" entry exists.
    assert efficiency_for(mini.devices["acc"], "depthwise") == 0.5


def test_peak_and_efficiency_lookup() -> None:
    soc = load_target("edge-soc")
    npu, cpu = soc.devices["npu"], soc.devices["cpu"]
    assert peak_for(npu, "float16") == 4 * peak_for(npu, "float32")
    assert peak_for(cpu, "bool") == min(cpu.peak.values())  # unlisted dtype: the slowest listed rate
    assert peak_for(cpu, "uint8") == cpu.peak["int8"]  # unsigned: the signed datapath of its width
    assert efficiency_for(npu, "depthwise") < efficiency_for(npu, "conv")
    assert efficiency_for(cpu, "other") == cpu.efficiency["default"]
    fp32 = conv((1, 64, 28, 28), (64, 64, 3, 3), (1, 64, 28, 28), pads=[1, 1, 1, 1])
    fp16 = conv((1, 64, 28, 28), (64, 64, 3, 3), (1, 64, 28, 28), dtype="float16", pads=[1, 1, 1, 1])
    assert soc.cost(fp16, "npu") < soc.cost(fp32, "npu") < soc.cost(fp32, "cpu")


def _sized_nodes(scale: int) -> list[Node]:
    c = 8 * scale
    return [
        conv((1, c, 16, 16), (c, c, 3, 3), (1, c, 16, 16), pads=[1, 1, 1, 1]),
        conv((1, c, 16, 16), (c, 1, 3, 3), (1, c, 16, 16), group=c, pads=[1, 1, 1, 1]),
        node("MatMul", [val("a", (4 * scale, 64)), val("b", (64, 32), const=True)], [val("y", (4 * scale, 32))]),
        node("Add", [val("a", (scale, 1024)), val("b", (scale, 1024))], [val("c", (scale, 1024))]),
        unary("Softmax", (scale, 1000)),
        unary("Sigmoid", (scale, 4096)),
        node("ReduceMean", [val("x", (scale, 512))], [val("y", (scale, 1))]),
        node("Concat", [val("a", (scale, 256)), val("b", (scale, 256))], [val("y", (scale, 512))], axis=1),
    ]


@pytest.mark.parametrize("preset", PRESETS)
def test_cost_is_monotone_in_size_on_every_device(preset: str) -> None:
    target = load_target(preset)
    for device in target.devices:
        previous = [0.0] * len(_sized_nodes(1))
        for scale in (1, 2, 4, 8):
            costs = [target.cost(n, device) for n in _sized_nodes(scale)]
            assert all(c >= p for c, p in zip(costs, previous)), (device, scale, costs, previous)
            assert all(c >= target.devices[device].launch_ns for c in costs)
            previous = costs
        assert all(c > target.devices[device].launch_ns for c in previous)


def test_every_onnx_op_has_a_finite_cost_on_every_device() -> None:
    soc = load_target("edge-soc")
    for schema in onnx.defs.get_all_schemas():
        if schema.domain != "":
            continue
        ins = [val(f"i{k}", (2, 3, 4, 4)) for k in range(max(schema.min_input, 1))]
        outs = [val(f"o{k}", (2, 3, 4, 4)) for k in range(max(schema.min_output, 1))]
        n = node(schema.name, ins, outs)
        free = is_view(n)   # a view's bytes are aliased: no kernel runs
        for device in soc.devices:
            cost = soc.cost(n, device)
            assert math.isfinite(cost) and (cost == 0 if free else cost >= soc.devices[device].launch_ns), \
                (schema.name, device)


def test_cost_tracks_edits_to_a_node() -> None:
    soc = load_target("edge-soc")
    relu = unary("Relu", (1, 1024))
    small = soc.cost(relu, "cpu")
    relu.inputs[0].shape = relu.outputs[0].shape = (64, 1024)
    assert soc.cost(relu, "cpu") > small


@pytest.mark.slow
def test_official_onnx_node_cases_cost_and_check_on_every_preset() -> None:
    """Every official per-operator test model the frontend imports: capability answers and finite costs."""
    from onnx.backend.test.case.node import collect_testcases

    from hetc.errors import HetcError
    from hetc.frontend import import_model

    targets = [load_target(p) for p in PRESETS]
    imported = 0
    for case in collect_testcases():
        try:
            graph = import_model(case.model)
        except HetcError:
            continue
        imported += 1
        for n in graph.nodes:
            for target in targets:
                assert target.candidates(n), (case.name, n.op_type)
                for device in target.devices:
                    assert math.isfinite(target.cost(n, device))
    assert imported > 1000
