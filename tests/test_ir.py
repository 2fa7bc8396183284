"""The IR: topological order, links, networkx export, printing, copying and export back to ONNX."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hetc.ir import Graph, Node, Value, to_onnx


def _chain_graph(reverse: bool = False) -> Graph:
    """x -> Conv(w, b) -> Relu -> Add(const) -> y, optionally with the node list given backwards."""
    rng = np.random.default_rng(0)
    x = Value("x", "float32", (1, 2, 5, 5))
    w = Value("w", "float32", (3, 2, 3, 3), const=rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    b = Value("b", "float32", (3,), const=rng.standard_normal(3).astype(np.float32))
    c = Value("c", "float32", (1, 3, 1, 1), const=np.full((1, 3, 1, 1), 0.5, np.float32))
    conv_out, relu_out, y = (Value(n, "float32", (1, 3, 5, 5)) for n in ("conv_out", "relu_out", "y"))
    nodes = [Node(0, "Conv", "conv", [x, w, b], [conv_out], {"pads": [1, 1, 1, 1]}),
             Node(1, "Relu", "relu", [conv_out], [relu_out]),
             Node(2, "Add", "add", [relu_out, c], [y])]
    return Graph.build("chain", nodes[::-1] if reverse else nodes, [x], [y], {"": 17})


def _run(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_build_orders_nodes_topologically_and_links_values() -> None:
    graph = _chain_graph(reverse=True)
    assert [n.op_type for n in graph.topo_order()] == ["Conv", "Relu", "Add"]
    position = {n.id: i for i, n in enumerate(graph.nodes)}
    for node in graph.nodes:
        for pred in graph.predecessors(node):
            assert position[pred.id] < position[node.id]
    conv_out = graph.values["conv_out"]
    assert conv_out.producer.op_type == "Conv" and [c.op_type for c in conv_out.consumers] == ["Relu"]
    assert [v.name for v in graph.constants] == ["w", "b", "c"]
    assert graph.weight_bytes() == (54 + 3 + 3) * 4


def test_cycle_is_reported() -> None:
    a, b = Value("a", "float32", (1,)), Value("b", "float32", (1,))
    with pytest.raises(ValueError, match="cycle"):
        Graph.build("cyclic", [Node(0, "Relu", "r0", [a], [b]), Node(1, "Relu", "r1", [b], [a])], [], [b], {"": 17})


def test_networkx_export_has_one_edge_per_value_flow() -> None:
    nxg = _chain_graph().to_networkx()
    assert sorted(nxg.nodes) == [0, 1, 2]
    assert nxg.nodes[0]["op"] == "Conv"
    edges = sorted((u, v, d["value"], d["bytes"]) for u, v, d in nxg.edges(data=True))
    assert edges == [(0, 1, "conv_out", 300), (1, 2, "relu_out", 300)]


def test_str_shows_ops_shapes_and_constants() -> None:
    text = str(_chain_graph())
    assert "graph chain (3 nodes, opset 17)" in text
    assert "%y:float32[1x3x5x5] = Add(%relu_out:float32[1x3x5x5], %c:float32[1x3x1x1]=const)" in text
    assert "pads=[1, 1, 1, 1]" in text


def test_copy_is_independent_and_shares_constant_arrays() -> None:
    graph = _chain_graph()
    twin = graph.copy()
    assert str(twin) == str(graph)
    assert twin.values["w"] is not graph.values["w"] and twin.values["w"].const is graph.values["w"].const
    assert twin.values["conv_out"].producer is twin.nodes[0]
    assert twin.values["conv_out"].consumers == [twin.nodes[1]]
    twin.nodes[1].op_type = "Sigmoid"
    twin.nodes[1].attrs["changed"] = 1
    assert graph.nodes[1].op_type == "Relu" and "changed" not in graph.nodes[1].attrs


def test_copy_handles_very_deep_graphs() -> None:
    # copy.deepcopy recursed along producer/consumer links and overflowed the stack here.
    values = [Value(f"v{i}", "float32", (4,)) for i in range(3001)]
    nodes = [Node(i, "Relu", f"r{i}", [values[i]], [values[i + 1]]) for i in range(3000)]
    graph = Graph.build("deep", nodes, [values[0]], [values[-1]], {"": 17})
    twin = graph.copy()
    assert len(twin) == 3000 and twin.outputs[0].producer is twin.nodes[-1]


def test_to_onnx_round_trip_runs_in_onnxruntime() -> None:
    graph = _chain_graph()
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 5)).astype(np.float32)
    (got,) = _run(graph, {"x": x})
    w, b = graph.values["w"].const, graph.values["b"].const
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((1, 3, 5, 5), np.float32)
    for i in range(5):
        for j in range(5):
            conv[0, :, i, j] = np.tensordot(w, padded[0, :, i:i + 3, j:j + 3], axes=3) + b
    np.testing.assert_allclose(got, np.maximum(conv, 0) + 0.5, rtol=1e-5, atol=1e-5)


def test_subgraph_outer_scope_values_are_linked_and_exported() -> None:
    # An If whose branches read a constant and a node output from the outer scope without listing them.
    cond = Value("cond", "bool", ())
    x = Value("x", "float32", (2,))
    doubled = Value("doubled", "float32", (2,))
    k = Value("k", "float32", (2,), const=np.array([10, 20], np.float32))
    y = Value("y", "float32", (2,))
    out = helper.make_tensor_value_info("r", TensorProto.FLOAT, [2])
    then_branch = helper.make_graph([helper.make_node("Add", ["doubled", "k"], ["r"])], "then", [], [out])
    else_branch = helper.make_graph([helper.make_node("Sub", ["doubled", "k"], ["r"])], "else", [], [out])
    two = Value("two", "float32", (), const=np.array(2, np.float32))
    nodes = [Node(1, "If", "if", [cond], [y], {"then_branch": then_branch, "else_branch": else_branch}),
             Node(0, "Mul", "mul", [x, two], [doubled])]
    graph = Graph(name="if", nodes=nodes, inputs=[cond, x], outputs=[y], values={"k": k}, opset={"": 17})
    graph.relink()
    assert [n.op_type for n in graph.nodes] == ["Mul", "If"]  # the implicit edge orders them
    assert graph.nodes[1].outer_scope_names() == ["doubled", "k"]
    assert graph.values["k"].consumers == [graph.nodes[1]]
    (got,) = _run(graph, {"cond": np.array(True), "x": np.array([1, 2], np.float32)})
    np.testing.assert_array_equal(got, [12, 24])
    assert graph.copy().values["k"].consumers[0].op_type == "If"
    assert [(u, v, key) for u, v, key in graph.to_networkx().edges(keys=True)] == [(0, 1, "doubled")]
