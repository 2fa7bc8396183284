"""Run-time shapes through control flow: an If whose branches return different shapes and a Loop whose trip
count comes from the data give host tensors (hetc.ir.host) on the CPU instead of a ShapeError; what they feed
follows the host-value rules. Built, simulated and validated against onnxruntime on edge-soc."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.pipeline import BuildOptions, build
from hetc.sim import simulate
from hetc.validate import validate

FAST = BuildOptions(target="edge-soc", time_limit_s=1.0, num_workers=1)


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "control", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _branch(name: str, shape: tuple[int, ...], seed: int) -> onnx.GraphProto:
    value = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return helper.make_graph([helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))],
                             name, [], [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))])


def if_model() -> onnx.ModelProto:
    """cond = sum(x) > 0; y = If(cond) then a 2x4 tensor else a 3x4 one; z = Relu(y) @ x: z is 2x5 or 3x5."""
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=_branch("t", (2, 4), 0),
                              else_branch=_branch("e", (3, 4), 1)),
             helper.make_node("Relu", ["y"], ["r"]),
             helper.make_node("MatMul", ["r", "x"], ["z"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])],
                  [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["rows", 5])],
                  [numpy_helper.from_array(np.array(0, np.float32), "zero")])


def loop_model() -> onnx.ModelProto:
    """A Loop of max(n) iterations over acc (acc <- acc * 0.5 + scale), scanning acc_out + acc_in: the scan
    output is (max(n), 3). The body reads the graph input ``scale`` from the outer scope."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["acc_in", "half"], ["halved"]),
         helper.make_node("Add", ["halved", "scale"], ["acc_out"]),
         helper.make_node("Add", ["acc_out", "acc_in"], ["scan_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    nodes = [helper.make_node("ReduceMax", ["n"], ["trips"], keepdims=0),
             helper.make_node("Loop", ["trips", "", "x"], ["final", "history"], body=body),
             helper.make_node("Exp", ["history"], ["h"]),
             helper.make_node("ReduceSum", ["h", "axes"], ["s"], keepdims=0)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                          helper.make_tensor_value_info("scale", TensorProto.FLOAT, [3]),
                          helper.make_tensor_value_info("n", TensorProto.INT64, [2])],
                  [helper.make_tensor_value_info("final", TensorProto.FLOAT, [3]),
                   helper.make_tensor_value_info("h", TensorProto.FLOAT, ["k", 3]),
                   helper.make_tensor_value_info("s", TensorProto.FLOAT, [3])],
                  [numpy_helper.from_array(np.array([0], np.int64), "axes")])


def _placement(result) -> dict[str, str]:
    return {row["op"]: row["device"] for row in result.placement}


@pytest.mark.parametrize("sign,rows", [(1.0, 2), (-1.0, 3)], ids=["then", "else"])
def test_if_whose_branches_return_different_shapes(sign: float, rows: int) -> None:
    model = if_model()
    result = build(model, FAST)
    y = result.graph.values["y"]
    assert y.host is not None and str(y.host) == "tensor(float32)[?,4]"
    placement = _placement(result)
    assert placement["If"] == placement["Relu"] == placement["MatMul"] == "cpu"
    inputs = {"x": (sign * np.abs(np.random.default_rng(2).normal(size=(4, 5)))).astype(np.float32)}
    sim = simulate(result.bundle, inputs)
    assert sim.outputs["z"].shape == (rows, 5)
    report = validate(model, sim.outputs, inputs)
    assert report.passed, str(report)


@pytest.mark.parametrize("n", [[2, 5], [1, 0], [0, 0]], ids=["five trips", "one trip", "no trip"])
def test_loop_whose_trip_count_comes_from_the_data(n: list[int]) -> None:
    model = loop_model()
    result = build(model, FAST)
    assert str(result.graph.values["history"].host) == "tensor(float32)[?,3]"
    assert result.graph.values["final"].host is None    # the carried value keeps its static shape
    rng = np.random.default_rng(5)
    inputs = {"x": rng.normal(size=3).astype(np.float32), "scale": rng.normal(size=3).astype(np.float32),
              "n": np.array(n, np.int64)}
    sim = simulate(result.bundle, inputs)
    assert sim.outputs["h"].shape == (max(n), 3)
    report = validate(model, sim.outputs, inputs)
    assert report.passed, str(report)


def capturing_if_model(branch_shapes_differ: bool = True) -> onnx.ModelProto:
    """x = Relu(inp); y = If(sum(inp) > 0) then x[:2] * 2 else x + 1, both branches reading x from the outer
    scope; z = Sigmoid(y). With ``branch_shapes_differ`` False the then branch is x * 2 (static 4x5)."""
    stop = 2 if branch_shapes_differ else 4
    then_branch = helper.make_graph(
        [helper.make_node("Slice", ["x", "s0", "stop"], ["xs"]), helper.make_node("Mul", ["xs", "two"], ["t"])],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(np.array([0], np.int64), "s0"),
         numpy_helper.from_array(np.array([stop], np.int64), "stop"),
         numpy_helper.from_array(np.array(2, np.float32), "two")])
    else_branch = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(np.array(1, np.float32), "one")])
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("ReduceSum", ["inp"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch),
             helper.make_node("Sigmoid", ["y"], ["z"])]
    return _model(nodes, [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [4, 5])],
                  [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 5])],
                  [numpy_helper.from_array(np.array(0, np.float32), "zero")])


@pytest.mark.parametrize("differ", [True, False], ids=["run-time shape", "static shape"])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["then", "else"])
def test_if_reading_outer_run_time_values(differ: bool, sign: float) -> None:
    """The CPU runs control flow without an outer scope: the If becomes a one-trip Loop carrying x."""
    model = capturing_if_model(differ)
    result = build(model, FAST)
    ops = [n.op_type for n in result.graph.nodes]
    assert "If" not in ops and "Loop" in ops and "Squeeze" in ops
    assert (result.graph.values["y"].host is not None) == differ
    inputs = {"inp": (sign * np.abs(np.random.default_rng(4).normal(size=(4, 5)))).astype(np.float32)}
    sim = simulate(result.bundle, inputs)
    assert sim.outputs["z"].shape == ((2 if sign > 0 else 4) if differ else 4, 5)
    report = validate(model, sim.outputs, inputs)
    assert report.passed, str(report)
