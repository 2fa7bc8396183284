"""An If whose branches read values of the enclosing graph (`loop_capturing_if` in hetc.frontend.subgraphs): the shape of
openwakeword's hey_jarvis, whose If runs a verifier network on a hit, and of silero-vad's If on the sample
rate. It compiles, and the simulator computes what onnxruntime computes down either branch."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hetc.backend as backend
from hetc.frontend import import_model

FAST = {"time_limit_s": 1.0, "num_workers": 1}
_RNG = np.random.default_rng(7)
# Above MAX_EMBEDDED_ELEMENTS, so the branch reads it from the outer graph rather than a copy of its own.
_WEIGHT = (_RNG.standard_normal((64, 64)) / 8).astype(np.float32)


def _capturing_if() -> onnx.ModelProto:
    """y = x @ W when sum(relu(x)) > 4 (then: reads the activation and the weight), else 2 * relu(x)
    (reads the activation); both branches capture outer values."""
    f32 = TensorProto.FLOAT
    then = helper.make_graph([helper.make_node("MatMul", ["act", "w"], ["hit"])], "then", [],
                             [helper.make_tensor_value_info("hit", f32, [1, 64])])
    other = helper.make_graph([helper.make_node("Add", ["act", "act"], ["miss"])], "else", [],
                              [helper.make_tensor_value_info("miss", f32, [1, 64])])
    nodes = [helper.make_node("Relu", ["x"], ["act"]),
             helper.make_node("ReduceSum", ["act"], ["total"], keepdims=0),
             helper.make_node("Constant", [], ["four"], value=numpy_helper.from_array(np.array(4, np.float32))),
             helper.make_node("Greater", ["total", "four"], ["hit_cond"]),
             helper.make_node("If", ["hit_cond"], ["picked"], then_branch=then, else_branch=other),
             helper.make_node("Sigmoid", ["picked"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f32, [1, 64])],
                              [helper.make_tensor_value_info("y", f32, [1, 64])],
                              initializer=[numpy_helper.from_array(_WEIGHT, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_the_capturing_if_becomes_a_loop_that_carries_its_captures() -> None:
    graph = import_model(_capturing_if())
    ops = graph.op_histogram()
    assert "If" not in ops and ops["Loop"] == 1
    loop = next(n for n in graph.nodes if n.op_type == "Loop")
    carried = {v.name for v in loop.inputs[2:]}
    assert {"act", "w", "hit_cond"} <= carried          # every captured value is now an explicit input
    assert graph.values["picked"].shape == (1, 64)


@pytest.mark.parametrize("target", ["edge-soc", "cpu-only"])
@pytest.mark.parametrize("branch", ["then", "else"])
def test_the_capturing_if_computes_what_onnxruntime_computes(target: str, branch: str) -> None:
    x = np.abs(_RNG.standard_normal((1, 64))).astype(np.float32) * (1.0 if branch == "then" else 0.01)
    assert (x.sum() > 4) == (branch == "then")
    model = _capturing_if()
    (expected,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with backend.prepare(model, target=target, **FAST) as rep:
        (y,) = rep.run([x])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_an_if_that_reads_only_its_condition_stays_an_if() -> None:
    f32 = TensorProto.FLOAT
    one = helper.make_graph([helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(
        np.ones((1, 4), np.float32)))], "one", [], [helper.make_tensor_value_info("a", f32, [1, 4])])
    zero = helper.make_graph([helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(
        np.zeros((1, 4), np.float32)))], "zero", [], [helper.make_tensor_value_info("b", f32, [1, 4])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=one, else_branch=zero)], "g",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", f32, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    assert import_model(model).op_histogram().get("If") == 1
