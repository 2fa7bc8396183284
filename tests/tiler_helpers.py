"""Small ONNX models for the tiling tests, and the onnxruntime comparison of a graph before and after tiling."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hetc.frontend import import_model
from hetc.ir import Graph, to_onnx
from hetc.ir.tiles import is_alias
from hetc.passes import optimize
from hetc.validate.weights import randomize_weights


def make_model(nodes: list[onnx.NodeProto], inputs: dict[str, Sequence[int]], outputs: Sequence[str],
               weights: dict[str, Sequence[int] | np.ndarray], opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """A model of ``nodes`` with graph outputs ``outputs`` (shapes inferred); each weight a shape (seeded,
    fan-in-scaled random values via randomize_weights) or an array kept as given (shapes, scales)."""
    inits = []
    for name, spec in weights.items():
        array = spec if isinstance(spec, np.ndarray) else np.zeros(tuple(spec), np.float32)
        inits.append(numpy_helper.from_array(array, name))
    graph = helper.make_graph(nodes, "tiling_test",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in inputs.items()],
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in outputs],
                              initializer=inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
    model.ir_version = 9
    return randomize_weights(model, seed)


def load(model: onnx.ModelProto) -> Graph:
    return optimize(import_model(model))


def run(graph: Graph, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    names = [v.name for v in graph.outputs]
    return dict(zip(names, session.run(names, feeds)))


def assert_same_outputs(original: Graph, tiled: Graph, rtol: float = 1e-5) -> None:
    """The tiled graph computes what the original does (relative to each output's scale: partial sums of a
    K split add in another order)."""
    a, b = run(original), run(tiled)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape
        scale = float(np.abs(a[name]).max())
        assert scale > 0, f"output {name} is all zeros: the comparison would prove nothing"
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=rtol * scale, err_msg=name)


def tiles_of(graph: Graph, name: str) -> list[Any]:
    return [n for n in graph.nodes if n.tile is not None and n.tile.of == name]


def aliases(graph: Graph, op: str) -> list[Any]:
    return [n for n in graph.nodes if is_alias(n) and n.op_type == op]
