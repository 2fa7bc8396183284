"""Per-channel scales and shifts folded into the Conv or BatchNormalization before them
(hetc.passes.affine.AFFINE_RULES), and a BatchNormalization taking its Relu as an epilogue; numerics stay
onnxruntime's, in the graph and in the simulated bundle."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hetc.api import BuildOptions, build
from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION, to_onnx
from hetc.ir.fused import node_label
from hetc.passes import optimize

F = TensorProto.FLOAT


def _model(scale_shape: tuple[int, ...], shift_shape: tuple[int, ...], seed: int = 0) -> onnx.ModelProto:
    """x[1,8,10,10] -> Conv -> Mul(s1) -> Add(t1) -> Relu -> BatchNormalization -> Mul(s2) -> Add(t2) -> Relu
    -> Conv -> y: a Caffe export's Scale layers, after a convolution and in a pre-activation block."""
    rng = np.random.default_rng(seed)

    def tensor(name: str, shape: tuple[int, ...], positive: bool = False) -> onnx.TensorProto:
        a = rng.standard_normal(shape).astype(np.float32)
        return numpy_helper.from_array(np.abs(a) + 0.5 if positive else a, name)

    inits = [numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) / math.sqrt(72)).astype(np.float32), "w1"),
             tensor("b1", (8,)), tensor("s1", scale_shape), tensor("t1", shift_shape),
             tensor("gamma", (8,)), tensor("beta", (8,)), tensor("mean", (8,)), tensor("var", (8,), positive=True),
             tensor("s2", scale_shape), tensor("t2", shift_shape),
             numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) / math.sqrt(8)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "s1"], ["c_s"]), helper.make_node("Add", ["t1", "c_s"], ["c_t"]),
             helper.make_node("Relu", ["c_t"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "gamma", "beta", "mean", "var"], ["n"]),
             helper.make_node("Mul", ["n", "s2"], ["n_s"]), helper.make_node("Add", ["n_s", "t2"], ["n_t"]),
             helper.make_node("Relu", ["n_t"], ["a"]), helper.make_node("Conv", ["a", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "affine", [helper.make_tensor_value_info("x", F, [1, 8, 10, 10])],
                              [helper.make_tensor_value_info("y", F, [1, 4, 10, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _x() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((1, 8, 10, 10)).astype(np.float32)


def test_per_channel_scales_and_shifts_fold_and_the_relus_fuse() -> None:
    model = _model((8, 1, 1), (1, 8, 1, 1))
    stats: dict = {}
    graph = optimize(import_model(model), stats)
    assert stats["fold_affine"]["changed"] == 4
    assert [node_label(n) for n in graph.nodes] == ["Conv+Relu", "BatchNormalization+Relu", "Conv"]
    np.testing.assert_allclose(_run(to_onnx(graph), _x()), _run(model, _x()), rtol=1e-5, atol=1e-5)


def test_a_scalar_folds_and_a_spatial_constant_does_not() -> None:
    scalar = optimize(import_model(_model((1,), (1,))))
    assert not any(n.op_type in ("Mul", "Add") and n.domain == "" for n in scalar.nodes)
    # (10, 1): varies along the rows, not the channels: the Conv's epilogue takes it, and the shift after it
    # (per channel, but no longer right after the Conv), the BN's likewise
    spatial_model = _model((10, 1), (8, 1, 1))
    spatial = optimize(import_model(spatial_model))
    assert [node_label(n) for n in spatial.nodes] == ["Conv+Mul+Add+Relu", "BatchNormalization+Mul+Add+Relu",
                                                      "Conv"]
    np.testing.assert_allclose(_run(to_onnx(spatial), _x()), _run(spatial_model, _x()), rtol=1e-5, atol=1e-5)


def test_the_folded_and_fused_kernels_validate_on_the_chip() -> None:
    for target in ("edge-soc", "multi-npu"):
        result = build(_model((8, 1, 1), (8, 1, 1), seed=3), BuildOptions(target=target, validate=True))
        assert result.validation is not None and result.validation.passed
        fused = [p for node, p in result.schedule.placement.items()
                 if result.graph.node(node).op_type == "BatchNormalization"]
        assert fused and all(device != "cpu" for device in fused)
