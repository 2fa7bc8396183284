"""Conformance gaps closed in the ONNX backend: models stamped above the opsets onnxruntime loads, optional
outputs ONNX leaves untyped, and subgraph outputs whose shape only the body reveals."""
from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

import hetc.backend as backend
from hetc.errors import ModelError
from hetc.ir.fused import HETC_COMPOSITES
from hetc.frontend import MAX_OPSET, NEWEST_OPSET, import_model
from hetc.frontend.evaluator import evaluate
from hetc.frontend.opsets import runtime_opsets
from hetc.ir import EXPORT_IR_VERSION, Node, Value
from hetc.sim.kernels import run_on_cpu
from hetc.sim.kernels.cpu import onnxruntime_deviates
from hetc.target.ops import KERNEL_SET
from hetc.validate import reference_outputs

FAST = {"time_limit_s": 1.0, "num_workers": 1}
vi = helper.make_tensor_value_info


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           opset: int) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _bitshift_int8(opset: int = 28) -> onnx.ModelProto:
    """BitShift on int8 exists only from opset 28: onnx's converter cannot lower it (onnxruntime < 1.32 refuses it)."""
    return _model([helper.make_node("BitShift", ["a", "b"], ["y"], direction="RIGHT")],
                  [vi("a", TensorProto.INT8, [4]), vi("b", TensorProto.INT8, [4])],
                  [vi("y", TensorProto.INT8, [4])], opset)


# ---------------------------------------------------------------------------------------------- opsets 27/28
def test_a_model_the_converter_cannot_lower_keeps_its_opset() -> None:
    assert import_model(_bitshift_int8()).opset[""] == 28


def test_a_model_the_converter_can_lower_is_lowered_for_onnxruntime() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", TensorProto.FLOAT, [3])],
                   [vi("y", TensorProto.FLOAT, [3])], NEWEST_OPSET)
    assert import_model(model).opset[""] == MAX_OPSET


def test_an_opset_newer_than_onnx_knows_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=f"hetc supports 7..{NEWEST_OPSET}; re-export"):
        import_model(_bitshift_int8(NEWEST_OPSET + 1))


def test_one_node_models_are_stamped_with_the_newest_opset_that_defines_the_op_the_same() -> None:
    assert runtime_opsets("Relu", "", {}, {"": 28, "ai.onnx.ml": 5}) == {"": MAX_OPSET, "ai.onnx.ml": 5}
    assert runtime_opsets("BitShift", "", {}, {"": 28}) == {"": 28}
    assert runtime_opsets("Relu", "", {}, {"": 17}) == {"": 17}
    body = helper.make_graph([helper.make_node("BitShift", ["a", "b"], ["c"], direction="LEFT")], "body", [],
                             [vi("c", TensorProto.INT8, [4])])
    assert runtime_opsets("If", "", {"then_branch": body, "else_branch": body}, {"": 28}) == {"": 28}


def test_the_cpu_path_runs_opset_28_bitshift_int8_as_an_arithmetic_shift() -> None:
    a = np.array([-128, -7, 7, 127], np.int8)
    b = np.array([1, 2, 3, 9], np.int8)
    (y,) = run_on_cpu("BitShift", "", {"direction": "RIGHT"}, [a, b], [("int8", (4,))], {"": 28})
    np.testing.assert_array_equal(y, np.array([-64, -2, 0, 0], np.int8))  # arithmetic shift


def test_the_backend_compiles_and_runs_an_opset_28_model() -> None:
    a = np.array([-128, -7, 7, 127], np.int8)
    b = np.array([1, 2, 3, 0], np.int8)
    with backend.prepare(_bitshift_int8(), target="edge-soc", **FAST) as rep:
        (y,) = rep.run([a, b])
    np.testing.assert_array_equal(y, a >> b)


# onnx.reference's own "experimental" domain is one no other runtime registers: onnxruntime refuses its ops by
# construction (not because of a gap a later release may close), so they exercise the fallback paths.
_IM2COL_KERNEL = np.array([1, 1, 2, 2], np.int64)


def _im2col(x: np.ndarray) -> np.ndarray:
    """Im2Col of a 1x1xHxW image with 2x2 blocks, stride 1: one column per block position."""
    h, w = x.shape[2:]
    return np.array([[x[0, 0, i + di, j + dj] for i in range(h - 1) for j in range(w - 1)]
                     for di in range(2) for dj in range(2)], x.dtype)


def test_the_validator_reference_falls_back_to_onnx_reference_and_says_so() -> None:
    model = helper.make_model(
        helper.make_graph([helper.make_node("Im2Col", ["x", "k"], ["y"], domain="experimental")], "g",
                          [vi("x", TensorProto.FLOAT, [1, 1, 3, 3])], [vi("y", TensorProto.FLOAT, None)],
                          initializer=[onnx.numpy_helper.from_array(_IM2COL_KERNEL, "k")]),
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("experimental", 1)])
    model.ir_version = EXPORT_IR_VERSION
    x = np.random.default_rng(0).standard_normal((1, 1, 3, 3)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="reference outputs come from onnx.reference"):
        outputs = reference_outputs(model, {"x": x})
    np.testing.assert_array_equal(outputs["y"], _im2col(x))


def test_constant_folding_falls_back_to_onnx_reference_and_says_so() -> None:
    node = Node(0, "Im2Col", "im2col", [Value("x", "float32", (1, 1, 3, 3)), Value("k", "int64", (4,))],
                [Value("y", "float32", (4, 4))], domain="experimental")
    x = np.random.default_rng(1).standard_normal((1, 1, 3, 3)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="folded with onnx.reference"):
        (y,) = evaluate(node, [x, _IM2COL_KERNEL], {"": 21, "experimental": 1})
    np.testing.assert_array_equal(y, _im2col(x))


def test_npu_and_dsp_kernels_mean_the_same_at_the_newest_opset() -> None:
    """The NPU/DSP kernels follow the op definitions of opset <= MAX_OPSET. Up to the installed onnx's
    newest opset only Cast, QuantizeLinear and DequantizeLinear changed, and only by adding float6 types no device
    holds (nor the IR), and OneHot, by adding bfloat16 values (the same mapping); a newer
    onnx that changes another kernel-set op fails here, and capability must then send it to the CPU."""
    changed = {op for op in KERNEL_SET - HETC_COMPOSITES   # (hetc's own composites have no schema)
               if onnx.defs.get_schema(op, NEWEST_OPSET, "").since_version > MAX_OPSET}
    assert changed <= {"Cast", "QuantizeLinear", "DequantizeLinear", "OneHot"}
    for op in changed:
        new = onnx.defs.get_schema(op, NEWEST_OPSET, "")
        old = onnx.defs.get_schema(op, MAX_OPSET, "")
        assert set(new.attributes) == set(old.attributes)
        added = {t for c in new.type_constraints for t in c.allowed_type_strs} - {
            t for c in old.type_constraints for t in c.allowed_type_strs}
        # (bfloat16 OneHot values: no preset's NPU or DSP holds bfloat16, so capability keeps them on the CPU)
        assert added <= {"tensor(float6e2m3)", "tensor(float6e3m2)"} | ({"tensor(bfloat16)"} if op == "OneHot"
                                                                       else set())


# ------------------------------------------------------------------------------------- untyped outputs
def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


def test_attention_omitting_present_outputs_types_them_and_runs() -> None:
    """ONNX types present_key/present_value only when a past is given; omitted before qk_matmul_output they
    get the spec's shape (batch, kv_heads, past + kv_sequence, head_size)."""
    model = _model([helper.make_node("Attention", ["q", "k", "v"], ["y", "", "", "qk"])],
                   [vi("q", TensorProto.FLOAT, [1, 2, 3, 4]), vi("k", TensorProto.FLOAT, [1, 2, 5, 4]),
                    vi("v", TensorProto.FLOAT, [1, 2, 5, 4])],
                   [vi("y", TensorProto.FLOAT, [1, 2, 3, 4]), vi("qk", TensorProto.FLOAT, [1, 2, 3, 5])], 23)
    graph = import_model(model)
    (attention,) = graph.nodes
    assert [v.shape for v in attention.outputs[1:3]] == [(1, 2, 5, 4), (1, 2, 5, 4)]
    rng = np.random.default_rng(0)
    feeds = {"q": rng.standard_normal((1, 2, 3, 4), np.float32), "k": rng.standard_normal((1, 2, 5, 4), np.float32),
             "v": rng.standard_normal((1, 2, 5, 4), np.float32)}
    with backend.prepare(model, target="edge-soc", **FAST) as rep:
        outputs = rep.run(feeds)
    for actual, expected in zip(outputs, _reference(model, feeds)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def _if_on_input_size() -> onnx.ModelProto:
    """y = Reshape(x, [-1]) if Size(x) == 6 else x: the branches disagree in rank, so ONNX cannot merge them
    into one output type, but the condition is known at compile time."""
    flat = helper.make_graph(
        [helper.make_node("Constant", [], ["minus_one"], value_ints=[-1]),
         helper.make_node("Reshape", ["x", "minus_one"], ["flat"])],
        "then", [], [vi("flat", TensorProto.FLOAT, None)])
    same = helper.make_graph([helper.make_node("Identity", ["x"], ["same"])], "else", [],
                             [vi("same", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Size", ["x"], ["size"]),
             helper.make_node("Constant", [], ["six"], value_int=6),
             helper.make_node("Equal", ["size", "six"], ["is_six"]),
             helper.make_node("If", ["is_six"], ["picked"], then_branch=flat, else_branch=same),
             helper.make_node("Relu", ["picked"], ["y"])]
    return _model(nodes, [vi("x", TensorProto.FLOAT, [2, 3])], [vi("y", TensorProto.FLOAT, ["n"])], 17)


def test_an_if_with_a_constant_condition_becomes_the_branch_it_takes() -> None:
    graph = import_model(_if_on_input_size())
    assert "If" not in graph.op_histogram()
    assert graph.values["y"].shape == (6,)
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    with backend.prepare(_if_on_input_size(), target="edge-soc", **FAST) as rep:
        (y,) = rep.run([x])
    np.testing.assert_array_equal(y, np.maximum(x.reshape(-1), 0))


def _scan_reading_outer_constants() -> onnx.ModelProto:
    """A running sum whose body unsqueezes with axes captured from the outer graph, starting from a state
    built by ConstantOfShape: whole-model inference types neither the state nor the body's scan output."""
    body = helper.make_graph(
        [helper.make_node("Add", ["state_in", "x_t"], ["state_out"]),
         helper.make_node("Unsqueeze", ["state_out", "axes"], ["row"])],
        "body", [vi("state_in", TensorProto.FLOAT, None), vi("x_t", TensorProto.FLOAT, None)],
        [vi("state_out", TensorProto.FLOAT, None), vi("row", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Constant", [], ["axes"], value_ints=[0]),
             helper.make_node("Shape", ["x"], ["x_shape"], start=1),
             helper.make_node("ConstantOfShape", ["x_shape"], ["zeros"],
                              value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
             helper.make_node("Scan", ["zeros", "x"], ["total", "rows"], body=body, num_scan_inputs=1)]
    return _model(nodes, [vi("x", TensorProto.FLOAT, [4, 3])],
                  [vi("total", TensorProto.FLOAT, ["d"]), vi("rows", TensorProto.FLOAT, ["t", "one", "d"])], 17)


def test_a_scan_is_typed_through_its_body_and_runs_with_its_captured_constants() -> None:
    model = _scan_reading_outer_constants()
    graph = import_model(model)
    assert (graph.values["total"].shape, graph.values["rows"].shape) == ((3,), (4, 1, 3))
    (scan,) = [n for n in graph.nodes if n.op_type == "Scan"]
    assert scan.outer_scope_names() == []  # the axes now live in the body, so the CPU session needs no outer scope
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    with backend.prepare(model, target="edge-soc", **FAST) as rep:
        total, rows = rep.run([x])
    np.testing.assert_array_equal(total, x.sum(axis=0))
    np.testing.assert_array_equal(rows, np.cumsum(x, axis=0)[:, None, :])


# ---------------------------------------------------------------------------- onnxruntime deviations
def test_nodes_onnxruntime_computes_off_spec_run_on_onnx_reference() -> None:
    """MaxUnpool with an explicit output_shape (ONNX's own example): onnxruntime 1.31 places the values
    elsewhere than the specification; the CPU path runs it on onnx.reference, which gives ONNX's output."""
    pooled = np.array([[[[5.0, 6.0], [7.0, 8.0]]]], np.float32)
    indices = np.array([[[[5, 7], [13, 15]]]], np.int64)
    output_shape = np.array([1, 1, 5, 5], np.int64)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    inputs = [pooled, indices, output_shape]
    assert onnxruntime_deviates("MaxUnpool", "", attrs, inputs, [("float32", (1, 1, 5, 5))])
    assert not onnxruntime_deviates("MaxUnpool", "", attrs, inputs[:2], [("float32", (1, 1, 4, 4))])
    (y,) = run_on_cpu("MaxUnpool", "", attrs, inputs, [("float32", (1, 1, 5, 5))], {"": 22})
    # The expected output of onnx/backend/test/case/node/maxunpool.py (export_with_output_shape).
    expected = np.array([[[[0, 0, 0, 0, 0], [0, 5, 0, 6, 0], [0, 0, 0, 0, 0], [0, 7, 0, 8, 0],
                           [0, 0, 0, 0, 0]]]], np.float32)
    np.testing.assert_array_equal(y, expected)
