"""An If on run-time data whose branches hold Ifs on the shapes (silero_vad's sample-rate If, whose branches test
the input's rank): each branch is specialised to the static shapes, the nested Ifs replaced by the branch they
take (hetc.frontend.static_shapes), and a branch that cannot run on these shapes at all leaves the If as its other
branch, with a warning."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.frontend import import_model
from hetc.frontend.static_shapes import InvalidBranchWarning
from hetc.pipeline import BuildOptions, build
from hetc.sim import simulate
from hetc.validate import validate

FAST = BuildOptions(target="edge-soc", time_limit_s=1.0, num_workers=1)


def _axes_if(prefix: str, axes_2d: list[int], axes_other: list[int]) -> list[onnx.NodeProto]:
    """axes = If(rank(inp) == 2) then axes_2d else axes_other: ONNX infers the If's output without its data, so
    the rank an Unsqueeze by these axes gives stays unknown until the If is resolved."""
    def constant(name: str, axes: list[int]) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
            np.array(axes, np.int64)))], name, [], [helper.make_tensor_value_info(name, TensorProto.INT64, ["k"])])
    return [helper.make_node("Shape", ["inp"], [f"{prefix}_shape"]),
            helper.make_node("Size", [f"{prefix}_shape"], [f"{prefix}_rank"]),
            helper.make_node("Equal", [f"{prefix}_rank", "two"], [f"{prefix}_is2d"]),
            helper.make_node("If", [f"{prefix}_is2d"], [f"{prefix}_axes"],
                             then_branch=constant(f"{prefix}_t", axes_2d), else_branch=constant(f"{prefix}_e", axes_other))]


def _branch(prefix: str, axes_2d: list[int], seed: int) -> onnx.GraphProto:
    """Unsqueeze inp by the axes of a nested If on its rank, Squeeze axis 0 again, then Gemm with a 5x3 weight:
    valid for a 2-D inp when ``axes_2d`` adds one axis, invalid (a 3-D Gemm input) when it adds two."""
    weight = (np.random.default_rng(seed).normal(size=(5, 3)) / np.sqrt(5)).astype(np.float32)
    nodes = _axes_if(prefix, axes_2d, [0]) + [
        helper.make_node("Unsqueeze", ["inp", f"{prefix}_axes"], [f"{prefix}_u"]),
        helper.make_node("Squeeze", [f"{prefix}_u", "zero_axis"], [f"{prefix}_s"]),
        helper.make_node("Gemm", [f"{prefix}_s", f"{prefix}_w"], [f"{prefix}_out"])]
    return helper.make_graph(nodes, prefix, [], [helper.make_tensor_value_info(f"{prefix}_out", TensorProto.FLOAT, ["a", "b"])],
                             [numpy_helper.from_array(weight, f"{prefix}_w")])


def vad_like_model(else_valid: bool) -> onnx.ModelProto:
    """y = If(sel == 1) then branch(axes [0]) else branch(axes [0] if ``else_valid`` else [0, 1]); z = Relu(y)."""
    nodes = [helper.make_node("Equal", ["sel", "one"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=_branch("then", [0], 0),
                              else_branch=_branch("else", [0] if else_valid else [0, 1], 1)),
             helper.make_node("Relu", ["y"], ["z"])]
    graph = helper.make_graph(nodes, "vad_like", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [4, 5]),
                                                  helper.make_tensor_value_info("sel", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b"])],
                              [numpy_helper.from_array(np.array(1, np.int64), "one"),
                               numpy_helper.from_array(np.array(2, np.int64), "two"),
                               numpy_helper.from_array(np.array([0], np.int64), "zero_axis")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _nested_ifs(graph: onnx.GraphProto) -> int:
    return sum(n.op_type == "If" for n in graph.node) + sum(
        _nested_ifs(a.g) for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)


def _run(model: onnx.ModelProto, sel: int) -> None:
    result = build(model, FAST)
    inputs = {"inp": np.random.default_rng(sel).normal(size=(4, 5)).astype(np.float32),
              "sel": np.array(sel, np.int64)}
    sim = simulate(result.bundle, inputs)
    assert sim.outputs["z"].shape == (4, 3)
    report = validate(model, sim.outputs, inputs)
    assert report.passed, str(report)


@pytest.mark.parametrize("sel", [1, 0], ids=["then", "else"])
def test_ifs_on_the_shapes_inside_a_run_time_if_are_resolved(sel: int) -> None:
    graph = import_model(vad_like_model(else_valid=True))
    kept = [n for n in graph.nodes if n.op_type in ("If", "Loop")]
    assert kept, "the If on the run-time input stays"
    for node in kept:
        bodies = [a for a in node.attrs.values() if isinstance(a, onnx.GraphProto)]
        assert bodies and all(_nested_ifs(b) <= 1 for b in bodies)  # only the run-time If itself, in the Loop body
    assert graph.values["y"].shape == (4, 3) and graph.values["y"].host is None
    _run(vad_like_model(else_valid=True), sel)


def test_a_branch_that_cannot_run_on_the_shapes_leaves_the_other() -> None:
    with pytest.warns(InvalidBranchWarning, match="else_branch cannot run on these input shapes"):
        graph = import_model(vad_like_model(else_valid=False))
    assert not any(n.has_subgraph for n in graph.nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvalidBranchWarning)
        _run(vad_like_model(else_valid=False), 1)
