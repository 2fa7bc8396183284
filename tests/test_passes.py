"""The graph passes: each one alone, the pipeline, and numerics against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS_DIR, light_model_path
from hetc.frontend import import_model, load_onnx
from hetc.ir import EXPORT_IR_VERSION, Graph, to_onnx
from hetc.passes import (eliminate_dead_code, fold_constants, fold_conv_batchnorm, optimize,
                         remove_identities)

vi = helper.make_tensor_value_info
RNG = np.random.default_rng(7)


def _model(nodes: list, inputs: list, outputs: list, initializers: dict[str, np.ndarray] | None = None,
           opset: int = 17) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(a, name) for name, a in (initializers or {}).items()]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _random_feeds(graph: Graph) -> dict[str, np.ndarray]:
    return {v.name: RNG.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}


def _assert_same_function(original: onnx.ModelProto, graph: Graph, optimized: Graph) -> None:
    """onnxruntime on the original model vs on the optimised graph exported back to ONNX."""
    feeds = _random_feeds(graph)
    runnable = onnx.ModelProto()
    runnable.CopyFrom(original)
    runnable.ir_version = min(runnable.ir_version, 10) if runnable.ir_version > 3 else runnable.ir_version
    expected = _run(runnable, feeds)
    got = _run(to_onnx(optimized), feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def _conv_bn_model(conv_bias: bool = True) -> onnx.ModelProto:
    channels_in, channels_out = 3, 5
    inits = {"w": RNG.standard_normal((channels_out, channels_in, 3, 3)).astype(np.float32),
             "gamma": RNG.uniform(0.5, 2, channels_out).astype(np.float32),
             "beta": RNG.standard_normal(channels_out).astype(np.float32),
             "mean": RNG.standard_normal(channels_out).astype(np.float32),
             "var": RNG.uniform(0.1, 3, channels_out).astype(np.float32)}
    conv_inputs = ["x", "w"]
    if conv_bias:
        inits["b"] = RNG.standard_normal(channels_out).astype(np.float32)
        conv_inputs.append("b")
    return _model([helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]),
                   helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"],
                                    epsilon=1e-3),
                   helper.make_node("Relu", ["bn"], ["y"])],
                  [vi("x", TensorProto.FLOAT, [2, channels_in, 6, 6])],
                  [vi("y", TensorProto.FLOAT, [2, channels_out, 6, 6])], inits)


# ---------------------------------------------------------------------------------------------- Conv + BN
@pytest.mark.parametrize("conv_bias", [True, False])
def test_conv_batchnorm_folding_keeps_numerics(conv_bias: bool) -> None:
    model = _conv_bn_model(conv_bias)
    graph = import_model(model)
    folded = fold_conv_batchnorm(graph)
    assert folded.op_histogram() == {"Conv": 1, "Relu": 1}
    conv = folded.nodes[0]
    assert conv.outputs[0].name == "bn" and all(v.is_const for v in conv.inputs[1:]) and len(conv.inputs) == 3
    _assert_same_function(model, graph, folded)
    assert graph.op_histogram() == {"Conv": 1, "BatchNormalization": 1, "Relu": 1}  # input untouched


def test_batchnorm_is_not_folded_when_the_conv_output_has_other_readers() -> None:
    model = _conv_bn_model()
    model.graph.node.append(helper.make_node("Neg", ["c"], ["also"]))
    model.graph.output.append(vi("also", TensorProto.FLOAT, [2, 5, 6, 6]))
    graph = import_model(model)
    assert fold_conv_batchnorm(graph).op_histogram() == graph.op_histogram()


# ---------------------------------------------------------------------------------------------- folding
def test_shape_arithmetic_and_weight_generation_fold_away() -> None:
    ones = numpy_helper.from_array(np.array([0.5], np.float32))
    model = _model([helper.make_node("Shape", ["x"], ["s"]),
                    helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
                    helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
                    helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
                    helper.make_node("Reshape", ["x", "target"], ["flat"]),
                    helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=ones),
                    helper.make_node("Range", ["r0", "r1", "r2"], ["bias"]),  # evaluated by onnxruntime
                    helper.make_node("MatMul", ["flat", "w"], ["mm"]),
                    helper.make_node("Add", ["mm", "bias"], ["y"])],
                   [vi("x", TensorProto.FLOAT, [2, 3, 4])], [vi("y", TensorProto.FLOAT, [2, 5])],
                   {"zero": np.array(0, np.int64), "minus1": np.array([-1], np.int64),
                    "wshape": np.array([12, 5], np.int64), "r0": np.array(0, np.float32),
                    "r1": np.array(5, np.float32), "r2": np.array(1, np.float32)})
    graph = import_model(model)
    folded = fold_constants(graph)
    assert folded.op_histogram() == {"Reshape": 1, "MatMul": 1, "Add": 1}
    assert folded.values["target"].const.tolist() == [2, -1]
    assert folded.values["bias"].const.tolist() == [0, 1, 2, 3, 4]
    assert folded.values["w"].const.shape == (12, 5)
    _assert_same_function(model, graph, folded)


def test_folding_falls_back_to_onnx_reference_where_onnxruntime_has_no_kernel() -> None:
    # onnxruntime 1.31 implements Max for int32/int64/floats but not int16; onnx.reference does.
    a, b = np.array([1, -7, 3], np.int16), np.array([2, -9, 3], np.int16)
    model = _model([helper.make_node("Max", ["a", "b"], ["m"]), helper.make_node("Cast", ["m"], ["mf"], to=1),
                    helper.make_node("Add", ["x", "mf"], ["y"])],
                   [vi("x", TensorProto.FLOAT, [3])], [vi("y", TensorProto.FLOAT, [3])], {"a": a, "b": b})
    folded = fold_constants(import_model(model))
    assert folded.op_histogram() == {"Add": 1}
    assert folded.values["mf"].const.tolist() == [2.0, -7.0, 3.0]


def test_random_ops_subgraphs_and_graph_outputs_are_not_folded() -> None:
    out = vi("r", TensorProto.FLOAT, [2])
    branch = helper.make_graph([helper.make_node("Identity", ["k"], ["r"])], "branch", [], [out])
    model = _model([helper.make_node("RandomNormal", [], ["noise"], shape=[2]),
                    helper.make_node("If", ["cond"], ["chosen"], then_branch=branch, else_branch=branch),
                    helper.make_node("Add", ["noise", "chosen"], ["y"]),
                    helper.make_node("Neg", ["k"], ["negk"])],
                   [vi("cond", TensorProto.BOOL, [])], [vi("y", TensorProto.FLOAT, [2]), vi("negk", TensorProto.FLOAT, [2])],
                   {"k": np.array([1, 2], np.float32)})  # a constant condition would inline the branch at import
    graph = import_model(model)
    optimized = optimize(graph)
    assert optimized.op_histogram() == {"RandomNormal": 1, "If": 1, "Add": 1, "Neg": 1}
    if_node = next(n for n in optimized.nodes if n.op_type == "If")
    assert if_node.attrs["then_branch"] is graph.nodes[1].attrs["then_branch"]  # kept as-is, opaque
    assert optimized.values["k"].consumers  # the branch reads it from the outer scope: kept and exported
    (_, negk) = _run(to_onnx(optimized), {"cond": np.array(True)})
    assert negk.tolist() == [-1, -2]


# ---------------------------------------------------------------------------------------------- DCE, identities
def test_dead_code_is_removed_but_inputs_are_kept() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Exp", ["x"], ["dead1"]),
                    helper.make_node("Neg", ["dead1"], ["dead2"]), helper.make_node("Sigmoid", ["unused"], ["dead3"])],
                   [vi("x", TensorProto.FLOAT, [3]), vi("unused", TensorProto.FLOAT, [3])],
                   [vi("y", TensorProto.FLOAT, [3])])
    graph = import_model(model)
    cleaned = eliminate_dead_code(graph)
    assert cleaned.op_histogram() == {"Relu": 1}
    assert [v.name for v in cleaned.inputs] == ["x", "unused"]
    assert len(graph) == 4


def test_identity_and_inference_dropout_are_removed() -> None:
    model = _model([helper.make_node("Identity", ["x"], ["a"]),
                    helper.make_node("Dropout", ["a"], ["b", "mask"]),
                    helper.make_node("Relu", ["b"], ["c"]),
                    helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
                    helper.make_node("Mul", ["c", "maskf"], ["d"]),
                    helper.make_node("Identity", ["d"], ["y"])],
                   [vi("x", TensorProto.FLOAT, [4])], [vi("y", TensorProto.FLOAT, [4])], opset=13)
    graph = import_model(model)
    cleaned = remove_identities(graph)
    assert cleaned.op_histogram() == {"Relu": 1, "Cast": 1, "Mul": 1}
    assert cleaned.outputs[0].name == "y" and cleaned.outputs[0].producer.op_type == "Mul"
    assert cleaned.values["mask"].const.all()
    _assert_same_function(model, graph, cleaned)
    assert optimize(graph).op_histogram() == {"Relu": 1, "Mul": 1}  # the mask's Cast folds


def test_dropout_mask_before_opset_12_keeps_the_node() -> None:
    # onnxruntime's inference mask is all-false there, the reference's all-true: keep the runtime's answer.
    model = _model([helper.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.3)], [vi("x", TensorProto.FLOAT, [4])],
                   [vi("y", TensorProto.FLOAT, [4]), vi("mask", TensorProto.BOOL, [4])], opset=10)
    assert remove_identities(import_model(model)).op_histogram() == {"Dropout": 1}


def test_identity_between_input_and_output_stays() -> None:
    model = _model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", TensorProto.FLOAT, [2])],
                   [vi("y", TensorProto.FLOAT, [2])])
    assert remove_identities(import_model(model)).op_histogram() == {"Identity": 1}


def test_training_mode_dropout_stays() -> None:
    model = _model([helper.make_node("Dropout", ["x", "ratio", "train"], ["y"])],
                   [vi("x", TensorProto.FLOAT, [4]), vi("train", TensorProto.BOOL, [])],
                   [vi("y", TensorProto.FLOAT, [4])], {"ratio": np.array(0.5, np.float32)})
    assert optimize(import_model(model)).op_histogram() == {"Dropout": 1}


# ---------------------------------------------------------------------------------------------- pipeline
def test_optimize_keeps_numerics_with_depthwise_conv_batchnorm() -> None:
    path = MODELS_DIR / "mobilenet_v2.onnx"  # grouped (depthwise) convolutions, each followed by a BN
    if not path.exists():
        pytest.skip("models/mobilenet_v2.onnx is not built")
    model = onnx.load(str(path))
    graph = import_model(model)
    optimized = optimize(graph)
    assert "BatchNormalization" not in optimized.op_histogram()
    _assert_same_function(model, graph, optimized)


@pytest.mark.parametrize("name", ["squeezenet", "inception_v2", "shufflenet", "densenet121"])
def test_optimize_keeps_numerics_on_light_models(name: str) -> None:
    model = onnx.load(str(light_model_path(name)))
    graph = import_model(model)
    optimized = optimize(graph)
    assert "ConstantOfShape" not in optimized.op_histogram()
    assert [n.id for n in optimized.nodes] == list(range(len(optimized)))
    assert all(v.is_const for v in optimized.constants) and len(optimized) < len(graph)
    _assert_same_function(model, graph, optimized)


def test_optimize_returns_a_new_graph() -> None:
    graph = load_onnx(light_model_path("inception_v2"))
    before = str(graph)
    stats: dict = {}
    optimized = optimize(graph, stats)
    assert str(graph) == before and optimized is not graph
    assert stats["fold_conv_batchnorm"]["changed"] == 69 and stats["fold_constants"]["changed"] > 400


def test_densenet_imports_and_optimizes() -> None:
    # (how long it takes: `python tools/compile_stages.py densenet121 edge-soc`, import_cpu_s)
    graph = load_onnx(light_model_path("densenet121"))
    optimized = optimize(graph)
    assert len(graph) == 1746 and "BatchNormalization" in optimized.op_histogram()  # some follow Concat
