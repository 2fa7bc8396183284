"""The Sum rule (hetc.passes.fusion.SUM_RULES): an Add of a Sum's result becomes one more operand of the Sum,
after the epilogue rules have taken the Sums they can; numerics stay onnxruntime's."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION, to_onnx
from hetc.ir.fused import FUSED_DOMAIN, node_label
from hetc.passes import SUM_RULES, optimize
from hetc.passes.patterns import run_rules

vi = helper.make_tensor_value_info
F = TensorProto.FLOAT


def _experts(count: int, residual_shape: list[int], seed: int = 0) -> onnx.ModelProto:
    """x[1,16] -> ``count`` Relu(MatMul) branches -> Sum -> Add(r) -> y: the combine step of a mixture."""
    rng = np.random.default_rng(seed)
    nodes, inits, outs = [], [], []
    for k in range(count):
        w = (rng.standard_normal((16, 16)) / math.sqrt(16)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [helper.make_node("MatMul", ["x", f"w{k}"], [f"m{k}"]), helper.make_node("Relu", [f"m{k}"], [f"e{k}"])]
        outs.append(f"e{k}")
    nodes += [helper.make_node("Sum", outs, ["s"]), helper.make_node("Add", ["s", "r"], ["y"])]
    graph = helper.make_graph(nodes, "sums", [vi("x", F, [1, 16]), vi("r", F, residual_shape)],
                              [vi("y", F, [max(1, residual_shape[0]), 16])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_the_add_of_a_sum_of_three_becomes_its_fourth_operand() -> None:
    model = _experts(3, [1, 16])
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((1, 16)).astype(np.float32), "r": rng.standard_normal((1, 16)).astype(np.float32)}
    stats: dict = {}
    graph = optimize(import_model(model), stats)
    assert stats["merge_sums"]["changed"] == 1
    (total,) = [n for n in graph.nodes if n.op_type == "Sum"]
    assert [v.name for v in total.inputs][-1] == "r" and len(total.inputs) == 4
    assert not any(n.op_type == "Add" and n.domain == "" for n in graph.nodes)
    np.testing.assert_allclose(_run(to_onnx(graph), feeds), _run(model, feeds), rtol=1e-6, atol=1e-6)


def test_a_sum_of_two_still_becomes_an_epilogue_first() -> None:
    """The dense case: Sum(a, b) + r fuses into the MatMul as Add, Add epilogues (one kernel, no Sum left)."""
    graph = optimize(import_model(_experts(2, [1, 16])))
    assert not any(n.op_type == "Sum" for n in graph.nodes)
    assert any(n.domain == FUSED_DOMAIN and node_label(n).endswith("+Add+Add") for n in graph.nodes)


def test_an_add_that_broadcasts_the_sum_larger_is_left_alone() -> None:
    graph = import_model(_experts(3, [4, 16]))
    assert run_rules(graph, SUM_RULES) == {rule.name: 0 for rule in SUM_RULES}
