"""Contrib operators (com.microsoft): those with standard equivalents are rewritten as them at import
(hetc.frontend.contrib) and get accelerator kernels; the others take their types from onnxruntime
(hetc.frontend.runtime_types) and run on the CPU through it. Built, simulated and validated on edge-soc."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.errors import ShapeError
from hetc.frontend import import_model
from hetc.pipeline import BuildOptions, build

FAST = BuildOptions(target="edge-soc", time_limit_s=1.0, num_workers=1, validate=True)
MS = "com.microsoft"
RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "contrib", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    model.ir_version = 9
    return model


def _init(name: str, shape, scale: float = 1.0, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.normal(size=shape) * scale).astype(dtype), name)


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _conv_model(activation: str | None, params=(), with_z: bool = False) -> onnx.ModelProto:
    attrs = {"pads": [1, 1, 1, 1]}
    if activation:
        attrs["activation"] = activation
    if params:
        attrs["activation_params"] = list(params)
    inputs = ["x", "w", "b"] + (["z"] if with_z else [])
    nodes = [helper.make_node("FusedConv", inputs, ["y"], domain=MS, **attrs)]
    graph_inputs = [vi("x", [1, 4, 8, 8])] + ([vi("z", [1, 8, 8, 8])] if with_z else [])
    return _model(nodes, graph_inputs, [vi("y", [1, 8, 8, 8])],
                  [_init("w", (8, 4, 3, 3), np.sqrt(2 / 36)), _init("b", (8,), 0.1)])


def _unary(op: str, **attrs) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node(op, ["h"], ["y"], domain=MS, **attrs)]
    return _model(nodes, [vi("x", [4, 16])], [vi("y", [4, 32])], [_init("w", (16, 32), 0.25)])


def _bias_gelu() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("BiasGelu", ["h", "bias"], ["y"], domain=MS)]
    return _model(nodes, [vi("x", [4, 16])], [vi("y", [4, 32])], [_init("w", (16, 32), 0.25), _init("bias", (32,))])


def _fast_gelu() -> onnx.ModelProto:
    nodes = [helper.make_node("FastGelu", ["x", "bias"], ["y"], domain=MS)]
    return _model(nodes, [vi("x", [4, 32])], [vi("y", [4, 32])], [_init("bias", (32,))])


def _skip_layer_norm(sum_output: bool = False) -> onnx.ModelProto:
    outputs = ["y", "", "", "s"] if sum_output else ["y"]
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], outputs,
                              domain=MS, epsilon=1e-5)]
    graph_outputs = [vi("y", [2, 5, 16])] + ([vi("s", [2, 5, 16])] if sum_output else [])
    return _model(nodes, [vi("x", [2, 5, 16]), vi("skip", [2, 5, 16])], graph_outputs,
                  [_init("gamma", (16,)), _init("beta", (16,)), _init("bias", (16,))])


LOWERED = {
    "Gelu": lambda: _unary("Gelu"),
    "QuickGelu": lambda: _unary("QuickGelu", alpha=1.5),
    "BiasGelu": _bias_gelu,
    "FastGelu": _fast_gelu,
    "FusedConv": lambda: _conv_model(None),
    "FusedConv Relu": lambda: _conv_model("Relu"),
    "FusedConv LeakyRelu + Z": lambda: _conv_model("LeakyRelu", [0.2], with_z=True),
    "FusedConv Clip": lambda: _conv_model("Clip", [-0.5, 0.5]),
    "FusedConv Sigmoid": lambda: _conv_model("Sigmoid"),
    "SkipLayerNormalization": _skip_layer_norm,
    "SkipLayerNormalization with its sum": lambda: _skip_layer_norm(True),
}


@pytest.mark.parametrize("case", list(LOWERED))
def test_contrib_ops_with_standard_equivalents_are_lowered_and_validate(case: str) -> None:
    model = LOWERED[case]()
    graph = import_model(model)
    assert not [n for n in graph.nodes if n.domain == MS], case
    result = build(model, FAST)
    report = result.validation
    assert report.passed and report.exact_source is not None, str(report)


def test_a_lowered_fused_conv_may_run_on_the_npu() -> None:
    """The NPU accepts the lowered Conv+Relu (a contrib node is refused: "custom-domain op; only the CPU")."""
    result = build(_conv_model("Relu"), FAST)
    (row,) = [row for row in result.placement if row["op"].startswith("Conv")]
    assert row["op"] == "Conv+Relu" and "npu:" not in row["refused"], row


def _matmul_nbits(bits: int = 4, k: int = 32, zero_points: bool = False) -> onnx.ModelProto:
    """MatMulNBits (weights in blocks of 16, K padded to whole blocks) then a standard Relu."""
    n, block = 8, 16
    blocks = -(-k // block)
    packed = RNG.integers(0, 256, (n, blocks, block * bits // 8)).astype(np.uint8)
    initializers = [numpy_helper.from_array(packed, "wq"), _init("scales", (n * blocks,), 0.05)]
    inputs = ["x", "wq", "scales"]
    if zero_points:
        per_row = -(-blocks * bits // 8)
        initializers.append(numpy_helper.from_array(RNG.integers(0, 256, n * per_row).astype(np.uint8), "zp"))
        inputs.append("zp")
    nodes = [helper.make_node("MatMulNBits", inputs, ["h"], domain=MS, K=k, N=n, bits=bits, block_size=block),
             helper.make_node("Relu", ["h"], ["y"])]
    return _model(nodes, [vi("x", [3, k])], [vi("y", [3, n])], initializers)


@pytest.mark.parametrize("bits,k,zero_points", [(4, 32, False), (4, 40, True), (8, 40, True)])
def test_matmul_nbits_with_constant_weights_becomes_a_matmul(bits: int, k: int, zero_points: bool) -> None:
    model = _matmul_nbits(bits, k, zero_points)
    assert "MatMul" in [n.op_type for n in import_model(model).nodes]
    result = build(model, FAST)
    assert result.validation.passed and result.validation.max_abs_err < 1e-5, str(result.validation)


def test_contrib_op_without_equivalent_is_typed_by_onnxruntime_and_runs_on_the_cpu() -> None:
    model = _model([helper.make_node("Inverse", ["x"], ["h"], domain=MS), helper.make_node("Relu", ["h"], ["y"])],
                   [vi("x", [2, 3, 3])], [vi("y", [2, 3, 3])])
    graph = import_model(model)
    h = graph.values["h"]
    assert (h.dtype, h.shape) == ("float32", (2, 3, 3))
    result = build(model, FAST)
    placement = {row["op"]: row["device"] for row in result.placement}
    assert placement["Inverse"] == "cpu"
    assert result.validation.passed, str(result.validation)


def test_skip_layer_norm_with_statistics_outputs_is_typed_by_onnxruntime() -> None:
    model = _skip_layer_norm()
    model.graph.node[0].output[:] = ["y", "mean", "inv_std", "s"]
    model.graph.output.append(vi("s", [2, 5, 16]))
    graph = import_model(model)
    assert [n.op_type for n in graph.nodes if n.domain == MS] == ["SkipLayerNormalization"]
    result = build(model, FAST)
    assert result.validation.passed, str(result.validation)


def test_an_op_onnxruntime_does_not_know_either_is_a_clear_error() -> None:
    model = _model([helper.make_node("NoSuchOp", ["x"], ["h"], domain=MS), helper.make_node("Relu", ["h"], ["y"])],
                   [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(ShapeError, match="unknown output type: .*NoSuchOp.*onnxruntime cannot run it either"):
        import_model(model)


def _dynamic_quantize_lstm(hidden: int = 2, features: int = 3, steps: int = 4) -> onnx.ModelProto:
    """ddddocr's OCR head: a bidirectional com.microsoft DynamicQuantizeLSTM whose exporter declares Y as
    ['', 2, 1, hidden] (sequence length open) although X is a static [steps, 1, features]."""
    def quantized(name: str, rows: int) -> onnx.TensorProto:
        return numpy_helper.from_array(RNG.integers(-127, 128, size=(2, rows, 4 * hidden)).astype(np.int8), name)
    scale = 1.0 / (127 * np.sqrt(features))
    inputs = ["x", "w", "r", "b", "", "", "", "", "w_scale", "w_zero", "r_scale", "r_zero"]
    nodes = [helper.make_node("DynamicQuantizeLSTM", inputs, ["y_all"], domain=MS, hidden_size=hidden,
                              direction="bidirectional"),
             helper.make_node("Relu", ["y_all"], ["y"])]
    model = _model(nodes, [vi("x", [steps, 1, features])], [vi("y", [steps, 2, 1, hidden])],
                   [quantized("w", features), quantized("r", hidden), _init("b", (2, 8 * hidden), 0.1),
                    numpy_helper.from_array(np.full(2, scale, np.float32), "w_scale"),
                    numpy_helper.from_array(np.zeros(2, np.int8), "w_zero"),
                    numpy_helper.from_array(np.full(2, scale, np.float32), "r_scale"),
                    numpy_helper.from_array(np.zeros(2, np.int8), "r_zero")])
    model.graph.value_info.append(vi("y_all", ["", 2, 1, hidden]))
    return model


def test_contrib_op_declared_with_an_open_dim_is_typed_by_onnxruntime() -> None:
    model = _dynamic_quantize_lstm()
    graph = import_model(model)
    assert (graph.values["y_all"].dtype, graph.values["y_all"].shape) == ("float32", (4, 2, 1, 2))
    result = build(model, FAST)
    assert {row["op"]: row["device"] for row in result.placement}["DynamicQuantizeLSTM"] == "cpu"
    assert result.validation.passed, str(result.validation)
