"""The router rule (hetc.passes.router): a mixture of experts' decomposed top-k gating becomes one TopKGate
composite, which means exactly the ops it replaced: on the NPU/DSP kernel, on the CPU path and written back
for onnxruntime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION, to_onnx
from hetc.ir.fused import FUSED_DOMAIN, composite_parts
from hetc.passes import optimize
from hetc.sim.kernels import run_kernel
from qdq_helpers import make_models


def _gates(tokens: int, experts: int, k: int, divide: bool = True, d_model: int = 0):
    """Softmax -> TopK -> OneHot -> ReduceSum -> Mul [-> ReduceSum -> Div] of the logits input, or with
    ``d_model`` of the router's projection ``logits = x @ W`` of the input x."""
    i64 = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)], v)  # noqa: E731
    projection = [helper.make_node("MatMul", ["x", "w"], ["logits"])] if d_model else []
    nodes = projection + [helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
             helper.make_node("TopK", ["p", "k"], ["top", "idx"], axis=-1),
             helper.make_node("OneHot", ["idx", "depth", "off_on"], ["hot"], axis=-1),
             helper.make_node("ReduceSum", ["hot", "k_axis"], ["mask"], keepdims=0),
             helper.make_node("Mul", ["p", "mask"], ["g" if divide else "y"])]
    if divide:
        nodes += [helper.make_node("ReduceSum", ["g", "e_axis"], ["s"], keepdims=1),
                  helper.make_node("Div", ["g", "s"], ["y"])]
    inits = [i64("k", [k]), i64("depth", [experts]), i64("k_axis", [1]), i64("e_axis", [1]),
             helper.make_tensor("off_on", TensorProto.FLOAT, [2], [0.0, 1.0])]
    if d_model:
        w = np.random.default_rng(d_model).standard_normal((d_model, experts)) / np.sqrt(d_model)
        inits.append(helper.make_tensor("w", TensorProto.FLOAT, [d_model, experts], w.ravel().tolist()))
    graph = helper.make_graph(nodes, "router", [helper.make_tensor_value_info(
                                  "x" if d_model else "logits", TensorProto.FLOAT, [tokens, d_model or experts])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [tokens, experts])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def test_the_gating_becomes_one_composite_that_names_its_parts():
    graph = optimize(import_model(_gates(4, 8, 2)))
    (node,) = graph.nodes
    assert (node.op_type, node.domain, node.attrs["k"], node.attrs["experts"]) == ("TopKGate", FUSED_DOMAIN, 2, 8)
    assert composite_parts(node) == ["Softmax", "TopK", "OneHot", "ReduceSum", "Mul", "ReduceSum", "Div"]


def test_gates_that_are_not_renormalised_stay_as_they_are():
    assert "TopKGate" not in optimize(import_model(_gates(4, 8, 2, divide=False))).op_histogram()


@pytest.mark.parametrize("tokens,experts,k", [(1, 8, 2), (16, 8, 2), (5, 4, 1), (3, 6, 3)])
def test_kernel_cpu_path_and_written_back_form_match_onnxruntime(tokens, experts, k):
    model = _gates(tokens, experts, k)
    rng = np.random.default_rng(tokens * 10 + k)
    logits = rng.standard_normal((tokens, experts)).astype(np.float32)
    logits[0, :2] = logits[0, 2]   # a tie: TopK keeps the lower index
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = reference.run(None, {"logits": logits})[0]
    graph = optimize(import_model(model))
    node = graph.nodes[0]
    for device in ("dsp", "cpu"):
        (got,) = run_kernel(device, "TopKGate", FUSED_DOMAIN, dict(node.attrs), [logits],
                            [("float32", (tokens, experts))], {"": 17})
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, err_msg=device)
        assert ((got > 0).sum(axis=1) == k).all()
    written = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(written.run(None, {"logits": logits})[0], expected, rtol=1e-6, atol=1e-7)


def test_the_router_projection_joins_the_composite():
    """The router is then one launch: its gates are known a launch and a sync sooner, which is when the
    predicated experts' weights may start to load."""
    graph = optimize(import_model(_gates(1, 8, 2, d_model=16)))
    (node,) = graph.nodes
    assert [v.name for v in node.inputs] == ["x", "w"]
    assert composite_parts(node)[:2] == ["MatMul", "Softmax"]


def test_a_projection_something_else_reads_stays_apart():
    model = _gates(1, 8, 2, d_model=16)
    model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8]))
    graph = optimize(import_model(model))
    assert graph.op_histogram()["MatMul"] == 1
    (gate,) = [n for n in graph.nodes if n.op_type == "TopKGate"]
    assert [v.name for v in gate.inputs] == ["logits"]


def test_probabilities_the_graph_returns_keep_their_softmax():
    model = _gates(1, 8, 2)
    model.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 8]))
    graph = optimize(import_model(model))
    assert "TopKGate" not in graph.op_histogram()
    assert all(v.producer in graph.nodes for v in graph.outputs)


@pytest.mark.parametrize("tokens,k", [(1, 2), (6, 3)])
def test_a_router_with_its_projection_matches_onnxruntime(tokens, k):
    model = _gates(tokens, 8, k, d_model=16)
    x = np.random.default_rng(tokens).standard_normal((tokens, 16)).astype(np.float32)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = reference.run(None, {"x": x})[0]
    graph = optimize(import_model(model))
    (node,) = graph.nodes
    w = node.inputs[1].const
    for device in ("dsp", "cpu"):
        (got,) = run_kernel(device, "TopKGate", FUSED_DOMAIN, dict(node.attrs), [x, w],
                            [("float32", (tokens, 8))], {"": 17})
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=device)
    written = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(written.run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_a_fused_router_still_predicates_the_experts():
    graph = optimize(import_model(make_models().moe(1, 8, 2, name="moe8")))
    assert graph.op_histogram()["TopKGate"] == 1
    assert len({n.when.name for n in graph.nodes if n.when is not None}) == 8
