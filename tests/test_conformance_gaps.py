"""Conformance gaps closed in the ONNX backend: models stamped above the opsets onnxruntime loads, optional
outputs ONNX leaves untyped, and subgraph outputs whose shape only the body reveals."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import hetc.backend as backend
from hetc.errors import ModelError
from hetc.frontend import MAX_OPSET, NEWEST_OPSET, import_model
from hetc.frontend.evaluator import evaluate
from hetc.frontend.opsets import runtime_opsets
from hetc.ir import EXPORT_IR_VERSION, Node, Value
from hetc.sim.kernels import run_on_cpu
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
    """BitShift on int8 exists only from opset 28: onnx's converter cannot lower it, onnxruntime refuses it."""
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


def test_the_cpu_path_runs_an_op_onnxruntime_refuses_on_onnx_reference() -> None:
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


def test_the_validator_reference_falls_back_to_onnx_reference_and_says_so() -> None:
    a = np.array([-128, -7, 7, 127], np.int8)
    b = np.array([1, 1, 1, 1], np.int8)
    with pytest.warns(RuntimeWarning, match="reference outputs come from onnx.reference"):
        outputs = reference_outputs(_bitshift_int8(), {"a": a, "b": b})
    np.testing.assert_array_equal(outputs["y"], a >> 1)


def test_constant_folding_falls_back_to_onnx_reference_and_says_so() -> None:
    node = Node(0, "BitShift", "", [Value("a", "int8", (2,)), Value("b", "int8", (2,))],
                [Value("y", "int8", (2,))], {"direction": "LEFT"})
    with pytest.warns(RuntimeWarning, match="folded with onnx.reference"):
        (y,) = evaluate(node, [np.array([3, -3], np.int8), np.array([1, 2], np.int8)], {"": 28})
    np.testing.assert_array_equal(y, np.array([6, -12], np.int8))


def test_npu_and_dsp_kernels_mean_the_same_at_the_newest_opset() -> None:
    """The NPU/DSP kernels follow the op definitions of opset <= MAX_OPSET. Up to the installed onnx's
    newest opset only Cast changed, and only by adding float6 types no device holds (nor the IR); a newer
    onnx that changes another kernel-set op fails here, and capability must then send it to the CPU."""
    changed = {op for op in KERNEL_SET
               if onnx.defs.get_schema(op, NEWEST_OPSET, "").since_version > MAX_OPSET}
    assert changed <= {"Cast"}
    for op in changed:
        new = onnx.defs.get_schema(op, NEWEST_OPSET, "")
        old = onnx.defs.get_schema(op, MAX_OPSET, "")
        assert set(new.attributes) == set(old.attributes)
        added = {t for c in new.type_constraints for t in c.allowed_type_strs} - {
            t for c in old.type_constraints for t in c.allowed_type_strs}
        assert added <= {"tensor(float6e2m3)", "tensor(float6e3m2)"}
