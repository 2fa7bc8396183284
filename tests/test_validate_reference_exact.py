"""The reference computes MatMulInteger(uint8, int8) exactly, as ONNX specifies, on machines where
onnxruntime's AVX2 kernel saturates (pairs of products added in int16)."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hetc.ir import EXPORT_IR_VERSION
from hetc.validate.reference import exact_integer_matmuls, onnxruntime_u8s8_saturates, reference_outputs


def _dynamic_quantized_matmul() -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, (128, 32), dtype=np.int8)
    w_zero = np.array(3, np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["y"])]
    graph = helper.make_graph(nodes, "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (8, 128))],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, (8, 32))],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_zero, "wz")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = EXPORT_IR_VERSION
    return model, w


def test_the_rewritten_reference_is_exact_integer_arithmetic() -> None:
    model, w = _dynamic_quantized_matmul()
    exact, count = exact_integer_matmuls(model)
    assert count == 1 and [n.op_type for n in exact.graph.node].count("MatMulInteger") == 0
    onnx.checker.check_model(exact)
    x = np.random.default_rng(4).normal(size=(8, 128)).astype(np.float32) * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = reference_outputs(model, {"x": x})["y"]
    # DynamicQuantizeLinear by its definition, then the integer product with both zero points subtracted
    scale = (max(x.max(), 0) - min(x.min(), 0)) / 255
    zero = np.clip(np.rint(-min(x.min(), 0) / scale), 0, 255)
    xq = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.int64)
    expected = (xq - int(zero)) @ (w.astype(np.int64) - 3)
    np.testing.assert_array_equal(y, expected)   # on every machine: exact, saturating kernel or not


def test_a_per_row_zero_point_is_left_to_onnxruntime() -> None:
    model, _ = _dynamic_quantized_matmul()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(8, np.uint8), "rows"))
    model.graph.node[1].input[2] = "rows"
    assert exact_integer_matmuls(model) is None


def test_the_probe_agrees_with_onnxruntime_on_the_model() -> None:
    """Where the probe says onnxruntime saturates, its own run of such a model is off; elsewhere exact."""
    import onnxruntime as ort
    model, w = _dynamic_quantized_matmul()
    x = np.random.default_rng(4).normal(size=(8, 128)).astype(np.float32) * 4
    raw = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    exact, _ = exact_integer_matmuls(model)
    fixed = ort.InferenceSession(exact.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (raw != fixed).any() == onnxruntime_u8s8_saturates()
