"""The CPU path (onnxruntime single-node sessions, onnx.reference fallback, subgraph ops), the dispatch
contract of run_kernel, semantics that changed across opsets, and the fp16 emulation."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hetc.sim.kernels.cpu as cpu
from hetc.errors import SimulationError
from hetc.ir import dtype_from_numpy
from hetc.sim.kernels import KERNEL_OPS, KERNELS, KernelError, has_kernel, kernel_limitation, run_kernel, run_on_cpu
from hetc.target.ops import CONTRIB_KERNEL_SET

RNG = np.random.default_rng(7)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _branch(name: str, op: str, value: float) -> object:
    """A then/else body computing ``op(x_const, value)`` from its own constant (no outer capture)."""
    const = helper.make_node("Constant", [], [f"{name}_c"], value=helper.make_tensor(f"{name}_t", TensorProto.FLOAT,
                                                                                    [2], [value, value]))
    out = helper.make_node(op, [f"{name}_c", f"{name}_c"], [f"{name}_out"])
    return helper.make_graph([const, out], name, [], [helper.make_tensor_value_info(f"{name}_out",
                                                                                    TensorProto.FLOAT, [2])])


def test_if_runs_whole_on_the_cpu():
    attrs = {"then_branch": _branch("then", "Add", 1.5), "else_branch": _branch("else", "Mul", 3.0)}
    out = [("float32", (2,))]
    assert run_kernel("cpu", "If", "", attrs, [np.array(True)], out, {"": 17})[0].tolist() == [3.0, 3.0]
    assert run_kernel("cpu", "If", "", attrs, [np.array(False)], out, {"": 17})[0].tolist() == [9.0, 9.0]


def test_subgraph_capturing_outer_values_is_refused_with_the_name():
    body = helper.make_graph([helper.make_node("Relu", ["outer_x"], ["y"])], "then", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    attrs = {"then_branch": body, "else_branch": body}
    with pytest.raises(KernelError, match="outer_x") as error:
        run_kernel("cpu", "If", "", attrs, [np.array(True)], [("float32", (2,))], {"": 17})
    assert isinstance(error.value, SimulationError)


def test_loop_runs_whole_on_the_cpu():
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "acc_in"], ["acc_out"]), helper.make_node("Identity", ["cond"], ["c"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3])])
    x = np.ones(3, np.float32)
    result = run_kernel("cpu", "Loop", "", {"body": body}, [np.array(4, np.int64), np.array(True), x],
                        [("float32", (3,))], {"": 17})
    assert result[0].tolist() == [16.0, 16.0, 16.0]


def test_scan_runs_whole_on_the_cpu():
    body = helper.make_graph(
        [helper.make_node("Add", ["sum_in", "x_t"], ["sum_out"]), helper.make_node("Identity", ["sum_out"], ["y_t"])],
        "body",
        [helper.make_tensor_value_info("sum_in", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("sum_out", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [2])])
    xs = np.arange(6, dtype=np.float32).reshape(3, 2)
    final, running = run_kernel("cpu", "Scan", "", {"body": body, "num_scan_inputs": 1},
                                [np.zeros(2, np.float32), xs], [("float32", (2,)), ("float32", (3, 2))], {"": 17})
    np.testing.assert_array_equal(final, xs.sum(axis=0))
    np.testing.assert_array_equal(running, np.cumsum(xs, axis=0))


def test_nested_bodies_may_read_their_enclosing_body():
    inner = helper.make_graph([helper.make_node("Neg", ["mid"], ["inner_out"])], "inner", [],
                              [helper.make_tensor_value_info("inner_out", TensorProto.FLOAT, [2])])
    const = helper.make_node("Constant", [], ["mid"], value=helper.make_tensor("m", TensorProto.FLOAT, [2], [1, 2]))
    nested_if = helper.make_node("If", ["flag"], ["outer_out"], then_branch=inner, else_branch=inner)
    flag = helper.make_node("Constant", [], ["flag"], value=helper.make_tensor("f", TensorProto.BOOL, [], [True]))
    outer = helper.make_graph([const, flag, nested_if], "outer", [],
                              [helper.make_tensor_value_info("outer_out", TensorProto.FLOAT, [2])])
    assert cpu.free_names(outer) == set()
    result = run_kernel("cpu", "If", "", {"then_branch": outer, "else_branch": outer}, [np.array(False)],
                        [("float32", (2,))], {"": 17})
    assert result[0].tolist() == [-1.0, -2.0]


def test_reference_evaluator_takes_over_when_onnxruntime_has_no_kernel():
    x = (_x(2, 3) * 4).astype(np.float16)  # onnxruntime has no float16 Celu kernel on the CPU
    result = run_kernel("cpu", "Celu", "", {"alpha": 2.0}, [x], [("float16", (2, 3))], {"": 13})[0]
    x32 = x.astype(np.float32)
    expected = np.maximum(0, x32) + np.minimum(0, 2.0 * np.expm1(x32 / 2.0))
    np.testing.assert_allclose(result.astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def test_sessions_are_cached_per_signature():
    cpu.clear_session_cache()
    x = _x(4, 5)
    for _ in range(3):
        run_kernel("cpu", "Relu", "", {}, [x], [("float32", x.shape)], {"": 17})
    assert len(cpu._sessions) == 1
    run_kernel("cpu", "LeakyRelu", "", {"alpha": 0.2}, [x], [("float32", x.shape)], {"": 17})
    run_kernel("cpu", "LeakyRelu", "", {"alpha": 0.3}, [x], [("float32", x.shape)], {"": 17})
    assert len(cpu._sessions) == 3


def test_cpu_path_runs_ops_outside_the_kernel_set():
    x = _x(3, 7)
    values, indices = run_kernel("cpu", "TopK", "", {"axis": 1}, [x, np.array([2], np.int64)],
                                 [("float32", (3, 2)), ("int64", (3, 2))], {"": 17})
    np.testing.assert_array_equal(values, -np.sort(-x, axis=1)[:, :2])
    assert indices.dtype == np.int64


def test_npu_and_dsp_never_fall_back_to_onnxruntime():
    x = _x(3, 7)
    for device in ("npu", "dsp"):
        assert not has_kernel(device, "CumSum")
        with pytest.raises(KernelError, match="no kernel for CumSum"):
            run_kernel(device, "CumSum", "", {}, [x, np.array(1, np.int64)], [("float32", (3, 7))], {"": 17})
    with pytest.raises(KernelError, match="no kernel for com.microsoft.FusedConv"):
        run_kernel("npu", "FusedConv", "com.microsoft", {}, [x], [("float32", x.shape)], {"": 17})


def test_contract_checks():
    x = _x(2, 2)
    assert KERNEL_OPS | CONTRIB_KERNEL_SET == frozenset(KERNELS)   # (the contrib ones of the com.microsoft domain)
    assert has_kernel("cpu", "NonMaxSuppression") and has_kernel("npu", "Conv") and not has_kernel("gpu", "Conv")
    with pytest.raises(KernelError, match="unknown device kind 'gpu'"):
        run_kernel("gpu", "Relu", "", {}, [x], [("float32", x.shape)], {"": 17})
    with pytest.raises(KernelError, match="unknown precision 'int4'"):
        run_kernel("npu", "Relu", "", {}, [x], [("float32", x.shape)], {"": 17}, precision="int4")
    with pytest.raises(KernelError, match="declares"):
        run_kernel("npu", "Relu", "", {}, [x], [("float32", (4,))], {"": 17})


def test_kernel_limitations_name_the_attribute():
    assert kernel_limitation("npu", "Resize", {"mode": "cubic"}, 19).startswith("mode 'cubic'")
    assert kernel_limitation("npu", "Resize", {"mode": b"linear"}, 19) is None
    assert "training_mode" in kernel_limitation("dsp", "BatchNormalization", {"training_mode": 1}, 15)
    assert kernel_limitation("npu", "CumSum", {}, 17) == "no NPU kernel for CumSum"
    assert "float8e4m3fn" in kernel_limitation("npu", "Cast", {"to": TensorProto.FLOAT8E4M3FN}, 19)
    assert kernel_limitation("npu", "Cast", {"to": TensorProto.FLOAT16}, 19) is None
    assert "stride larger" in kernel_limitation("npu", "MaxPool", {"auto_pad": "SAME_UPPER", "kernel_shape": [1, 1],
                                                                   "strides": [2, 2]}, 19)
    assert kernel_limitation("cpu", "Resize", {"mode": "cubic"}, 19) is None


def test_outputs_have_declared_dtype_and_never_alias_inputs():
    x = _x(2, 3)
    x.flags.writeable = False  # the simulator hands kernels read-only views of device memory
    for op in ("Identity", "Reshape", "Flatten", "Dropout"):
        inputs = [x, np.array([3, 2], np.int64)] if op == "Reshape" else [x]
        shape = (3, 2) if op == "Reshape" else x.shape
        (result,) = run_kernel("npu", op, "", {}, inputs, [("float32", shape)], {"": 17})
        assert result.flags.c_contiguous and not np.shares_memory(result, x)
    (cast,) = run_kernel("npu", "Cast", "", {"to": TensorProto.INT32}, [x], [("int32", x.shape)], {"": 17})
    assert cast.dtype == np.int32
    scalar = run_kernel("npu", "MatMul", "", {}, [_x(3), _x(3)], [("float32", ())], {"": 17})[0]
    assert scalar.shape == ()


# Semantics that changed across opsets: each checked against onnxruntime at that opset.
OPSET_CASES = [
    ("Softmax", {"axis": 1}, [_x(2, 3, 4)], 11),             # coerced to 2-D before opset 13
    ("LogSoftmax", {}, [_x(2, 3, 4)], 11),
    ("Softmax", {}, [_x(2, 3, 4)], 13),
    ("ReduceSum", {"axes": [1], "keepdims": 0}, [_x(2, 3, 4)], 11),
    ("ReduceSum", {"keepdims": 1}, [_x(2, 3, 4), np.array([0, -1], np.int64)], 13),
    ("ReduceSum", {"noop_with_empty_axes": 1}, [_x(2, 3), np.zeros(0, np.int64)], 13),
    ("ReduceMean", {"axes": [0, 2]}, [_x(2, 3, 4)], 13),
    ("ReduceMax", {"keepdims": 0}, [_x(2, 3, 4), np.array([1], np.int64)], 18),
    ("ReduceMin", {}, [_x(2, 3, 4)], 18),
    ("Split", {"axis": 1, "split": [1, 2]}, [_x(2, 3)], 11),
    ("Split", {"axis": 1, "num_outputs": 3}, [_x(2, 7)], 18),
    ("Squeeze", {"axes": [0]}, [_x(1, 3, 1)], 11),
    ("Squeeze", {}, [_x(1, 3, 1)], 13),
    ("Unsqueeze", {"axes": [0, -1]}, [_x(3, 2)], 11),
    ("Unsqueeze", {}, [_x(3, 2), np.array([1, -1], np.int64)], 13),
    ("Slice", {"starts": [1, 0], "ends": [100, -1], "axes": [0, 1]}, [_x(4, 5)], 9),
    ("Slice", {}, [_x(4, 5), np.array([-1, 4], np.int64), np.array([-100, 0], np.int64), np.array([0, 1], np.int64),
                   np.array([-2, -3], np.int64)], 13),
    ("Pad", {"pads": [1, 0, 2, 1], "value": 1.5}, [_x(2, 3)], 2),
    ("Pad", {"mode": "reflect"}, [_x(3, 4), np.array([1, 2, 2, 1], np.int64)], 13),
    ("Pad", {"mode": "edge"}, [_x(3, 4), np.array([0, -1, 2, 1], np.int64)], 13),
    ("Pad", {}, [_x(3, 4), np.array([1, 2], np.int64), np.array(0.5, np.float32), np.array([1], np.int64)], 18),
    ("Clip", {"min": -0.5, "max": 0.5}, [_x(3, 4)], 6),
    ("Clip", {}, [_x(3, 4), np.array(-0.2, np.float32)], 13),
    ("Reshape", {}, [_x(2, 3, 4), np.array([0, -1], np.int64)], 13),
    ("Reshape", {"allowzero": 1}, [_x(0, 3), np.array([3, 0], np.int64)], 14),
    ("Flatten", {"axis": -1}, [_x(2, 3, 4)], 13),
    ("Concat", {"axis": -2}, [_x(2, 3), _x(1, 3)], 13),
    ("Gather", {"axis": 1}, [_x(3, 5), np.array([[0, -1], [4, 2]], np.int64)], 13),
    ("Transpose", {}, [_x(2, 3, 4)], 13),
    ("BatchNormalization", {"epsilon": 1e-3}, [_x(2, 3, 4, 4), _x(3), _x(3), _x(3), np.abs(_x(3))], 9),
    ("InstanceNormalization", {}, [_x(2, 3, 5), _x(3), _x(3)], 6),
    ("LayerNormalization", {"axis": 1}, [_x(2, 3, 4), _x(3, 4), _x(3, 4)], 17),
    ("LRN", {"size": 3, "alpha": 1e-3, "beta": 0.6, "bias": 2.0}, [_x(1, 5, 3, 3)], 13),
    ("Gelu", {"approximate": "tanh"}, [_x(4, 5)], 20),
    ("Gelu", {}, [_x(4, 5) * 3], 20),
    ("Erf", {}, [_x(50) * 2], 13),
    ("HardSwish", {}, [_x(20) * 4], 14),
    ("Selu", {}, [_x(20)], 6),
    ("Softplus", {}, [_x(20) * 30], 1),
    ("Div", {}, [np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -2], np.int32)], 14),
    ("Pow", {}, [np.array([2, 3, 4], np.int64), np.array([2.0, 0.5, 3.0], np.float32)], 15),
    ("Mean", {}, [_x(2, 3), _x(3), _x(1, 1)], 13),
    ("Dropout", {}, [_x(3, 4)], 13),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "storage_order": 1}, [_x(1, 2, 5, 5)], 12),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "dilations": [2, 2]}, [_x(2, 2, 7, 7)], 12),
    ("GlobalMaxPool", {}, [_x(2, 3, 4, 5)], 1),
    ("GlobalAveragePool", {}, [_x(2, 3, 4, 5)], 1),
    ("Where", {}, [np.array([True, False, True]), np.array(1, np.int64), np.array([4, 5, 6], np.int64)], 16),
    ("Cast", {"to": TensorProto.FLOAT16}, [_x(5)], 13),
    ("Cast", {"to": TensorProto.INT64}, [_x(5) * 10], 13),
    ("Cast", {"to": TensorProto.BOOL}, [np.array([0.0, 1.5, -2.0], np.float32)], 13),
]


@pytest.mark.parametrize("op, attrs, inputs, opset", OPSET_CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in
                                                                      enumerate(OPSET_CASES)])
def test_opset_semantics_match_onnxruntime(op, attrs, inputs, opset):
    n_outputs = {"Split": 3 if "num_outputs" in attrs else 2, "MaxPool": 2 if "storage_order" in attrs else 1,
                 "Dropout": 2}.get(op, 1)
    expected = run_on_cpu(op, "", attrs, inputs, [("float32", ())] * n_outputs, {"": opset})
    declared = [(dtype_from_numpy(e.dtype), e.shape) for e in expected]
    actual = run_kernel("npu", op, "", attrs, inputs, declared, {"": opset})
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_legacy_broadcast_before_opset_7():
    # Neither onnxruntime nor onnx.reference run Add-6 any more; its rule: B aligned at `axis`.
    a, b = _x(2, 3, 4), _x(3)
    (result,) = run_kernel("npu", "Add", "", {"broadcast": 1, "axis": 1}, [a, b], [("float32", a.shape)], {"": 6})
    np.testing.assert_array_equal(result, a + b.reshape(1, 3, 1))


def test_fp16_emulation_rounds_and_stays_close():
    x, w, b = _x(1, 16, 12, 12), _x(32, 16, 3, 3) * 0.1, _x(32)
    attrs = {"pads": [1, 1, 1, 1]}
    out = [("float32", (1, 32, 12, 12))]
    exact = run_kernel("cpu", "Conv", "", attrs, [x, w, b], out, {"": 17})[0]
    half = run_kernel("npu", "Conv", "", attrs, [x, w, b], out, {"": 17}, precision="fp16")[0]
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half, half.astype(np.float16).astype(np.float32))  # fp16-representable
    error = np.abs(half - exact).max() / np.abs(exact).max()
    assert 0 < error < 2e-3  # 144 fp16-rounded products accumulated in fp32: well under 0.2% of range
    dsp = run_kernel("dsp", "Conv", "", attrs, [x, w, b], out, {"": 17}, precision="fp16")[0]
    np.testing.assert_allclose(dsp, exact, rtol=1e-4, atol=1e-5)  # the precision is the NPU's datapath
    # integer tensors are untouched by the emulation
    idx = np.array([70000, 3], np.int64)
    assert run_kernel("npu", "Identity", "", {}, [idx], [("int64", (2,))], {"": 17},
                      precision="fp16")[0].tolist() == [70000, 3]


def test_float16_models_compute_in_float32_and_return_float16():
    x = _x(4, 6).astype(np.float16)
    w = _x(6, 5).astype(np.float16)
    expected = run_kernel("cpu", "MatMul", "", {}, [x, w], [("float16", (4, 5))], {"": 17})[0]
    actual = run_kernel("npu", "MatMul", "", {}, [x, w], [("float16", (4, 5))], {"": 17})[0]
    assert actual.dtype == np.float16
    np.testing.assert_allclose(actual.astype(np.float32), expected.astype(np.float32), rtol=2e-3, atol=2e-3)
