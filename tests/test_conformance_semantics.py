"""Semantics behind three conformance fixes of issue 8: float16 Softmax rounds every step of its ONNX
function body, MeanVarianceNormalization imports through its function body, and PRelu's slope broadcasts
unidirectionally to the input."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import hetc.backend as backend
from hetc.errors import ShapeError
from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION
from hetc.sim.kernels import run_on_cpu
from hetc.sim.kernels.dispatch import run_kernel

vi = helper.make_tensor_value_info


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           opset: int = 13) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _softmax_body(log: bool, shape: tuple[int, ...]) -> onnx.ModelProto:
    """Softmax's (LogSoftmax's) ONNX function body for axis -1, every op in float16."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [-1])
    nodes = [helper.make_node("ReduceMax", ["x"], ["max"], keepdims=1, axes=[-1]),
             helper.make_node("Sub", ["x", "max"], ["shifted"]),
             helper.make_node("Exp", ["shifted"], ["e"]),
             helper.make_node("ReduceSum", ["e", "axes"], ["total"], keepdims=1)]
    if log:
        nodes += [helper.make_node("Log", ["total"], ["log_total"]),
                  helper.make_node("Sub", ["shifted", "log_total"], ["y"])]
    else:
        nodes += [helper.make_node("Div", ["e", "total"], ["y"])]
    model = _model(nodes, [vi("x", TensorProto.FLOAT16, shape)], [vi("y", TensorProto.FLOAT16, shape)])
    model.graph.initializer.append(axes)
    return model


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("device", ["npu", "dsp"])
def test_float16_softmax_kernel_rounds_every_step_of_the_function_body(op_type, device):
    x = (np.random.default_rng(1).standard_normal((64, 7)) * 4).astype(np.float16)
    want = ReferenceEvaluator(_softmax_body(op_type == "LogSoftmax", x.shape)).run(None, {"x": x})[0]
    got = run_kernel(device, op_type, "", {}, [x], [("float16", x.shape)], {"": 13})[0]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
    # (rounding only the final result, onnxruntime's way, differs by one ulp on some elements)
    wide = x.astype(np.float32)
    e = np.exp(wide - wide.max(-1, keepdims=True))
    once = (e / e.sum(-1, keepdims=True)).astype(np.float16)
    if op_type == "Softmax":
        assert (once != want).any()


def test_float16_softmax_on_the_cpu_follows_the_function_body_too():
    x = (np.random.default_rng(2).standard_normal((64, 7)) * 4).astype(np.float16)
    want = ReferenceEvaluator(_softmax_body(False, x.shape)).run(None, {"x": x})[0]
    got = run_on_cpu("Softmax", "", {}, [x], [("float16", x.shape)], {"": 13})[0]
    np.testing.assert_array_equal(got, want)


def test_npu_fp16_precision_of_a_float32_softmax_still_rounds_once():
    """--npu-precision fp16 emulates an fp16 datapath with wide accumulation: inputs rounded to float16, the
    result rounded once; a float32 model's Softmax keeps that semantics."""
    x = (np.random.default_rng(3).standard_normal((64, 7)) * 4).astype(np.float32)
    got = run_kernel("npu", "Softmax", "", {}, [x], [("float32", x.shape)], {"": 13}, precision="fp16")[0]
    wide = x.astype(np.float16).astype(np.float32)
    e = np.exp(wide - wide.max(-1, keepdims=True))
    np.testing.assert_array_equal(got, (e / e.sum(-1, keepdims=True)).astype(np.float16).astype(np.float32))


# ---------------------------------------------------------------------------------------------- MVN
def _mvn(opset: int, **attrs: object) -> onnx.ModelProto:
    return _model([helper.make_node("MeanVarianceNormalization", ["x"], ["y"], **attrs)],
                  [vi("x", TensorProto.FLOAT, [2, 3, 4, 5])], [vi("y", TensorProto.FLOAT, [2, 3, 4, 5])], opset)


def _mvn_expected(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / (np.sqrt((x * x).mean(axis=axes, keepdims=True) - mean * mean) + 1e-9)


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_mvn_without_axes_imports_with_its_default_axes(opset):
    """onnx types MVN through its function body, which reads ``axes`` by reference: omitted, strict shape
    inference failed. The importer spells out the default (0, 2, 3), which means the same."""
    graph = import_model(_mvn(opset))
    node = graph.nodes[0]
    assert node.op_type == "MeanVarianceNormalization" and list(node.attrs["axes"]) == [0, 2, 3]
    assert graph.outputs[0].shape == (2, 3, 4, 5)


def test_mvn_given_axes_keeps_them_and_runs_through_the_backend():
    assert list(import_model(_mvn(13, axes=[1])).nodes[0].attrs["axes"]) == [1]
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 5)).astype(np.float32)
    for attrs, axes in (({}, (0, 2, 3)), ({"axes": [1, 3]}, (1, 3))):
        with backend.prepare(_mvn(13, **attrs), time_limit_s=1.0, num_workers=1) as rep:
            np.testing.assert_allclose(rep.run([x])[0], _mvn_expected(x, axes), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- PRelu
def _prelu(opset: int, slope: np.ndarray | None, x_shape: tuple[int, ...] = (2, 3, 4),
           slope_shape: tuple[int, ...] = (3,)) -> onnx.ModelProto:
    """PRelu(x, slope): the slope an initializer (listed among the inputs, as IR 3 exporters did) or, when
    ``slope`` is None, a graph input."""
    inputs = [vi("x", TensorProto.FLOAT, list(x_shape)), vi("slope", TensorProto.FLOAT, list(slope_shape))]
    model = _model([helper.make_node("PRelu", ["x", "slope"], ["y"])], inputs,
                   [vi("y", TensorProto.FLOAT, list(x_shape))], opset)
    if slope is not None:
        model.graph.initializer.append(onnx.numpy_helper.from_array(slope, "slope"))
        model.ir_version = 3
    return model


def _per_channel(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(x < 0, x * slope.reshape((-1,) + (1,) * (x.ndim - 2)), x)


@pytest.mark.parametrize("scheduler", ["cpsat", "single:npu", "single:dsp"])
def test_opset6_per_channel_slope_keeps_its_meaning_on_every_device(scheduler):
    """PRelu-6: a slope 'of size 1 is shared across channels', else one value per channel (axis 1). The
    importer gives it shape (C, 1) before the conversion to opset 7, where it broadcasts from the right."""
    slope = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    graph = import_model(_prelu(6, slope))
    assert [v.shape for v in graph.nodes[0].inputs] == [(2, 3, 4), (3, 1)]
    assert [v.name for v in graph.values.values() if v.const is not None] == ["slope_per_channel"]
    x = np.random.default_rng(5).standard_normal((2, 3, 4)).astype(np.float32)
    with backend.prepare(_prelu(6, slope), scheduler=scheduler, time_limit_s=1.0, num_workers=1) as rep:
        np.testing.assert_array_equal(rep.run([x])[0], _per_channel(x, slope))


def test_opset6_per_channel_slope_computed_at_run_time_is_unsqueezed():
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 5)).astype(np.float32)
    slope = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    model = _prelu(6, None, x_shape=(2, 3, 4, 5))
    assert [n.op_type for n in import_model(model).nodes] == ["Unsqueeze", "PRelu"]
    with backend.prepare(model, time_limit_s=1.0, num_workers=1) as rep:
        np.testing.assert_array_equal(rep.run([x, slope])[0], _per_channel(x, slope))


def test_opset6_slope_of_another_size_than_the_channels_is_left_to_broadcast():
    """Not one value per channel: kept as it is, and judged by the opset-7 rule (trailing axes aligned)."""
    assert import_model(_prelu(6, np.ones(4, np.float32), slope_shape=(4,))).nodes[0].inputs[1].shape == (4,)
    with pytest.raises(ShapeError, match="does not broadcast unidirectionally"):
        import_model(_prelu(6, np.ones(5, np.float32), slope_shape=(5,)))


def test_opset7_slope_that_does_not_broadcast_is_a_shape_error_at_import():
    """From opset 7 the slope broadcasts unidirectionally: (3,) against (2, 3, 4) aligns 3 with 4."""
    with pytest.raises(ShapeError, match=r"slope of shape \(3\) does not broadcast .* give it shape \(3, 1\)"):
        import_model(_prelu(9, np.ones(3, np.float32)))
    graph = import_model(_prelu(9, np.ones(4, np.float32), slope_shape=(4,)))  # broadcasts along the last axis
    assert graph.nodes[0].inputs[1].shape == (4,)
