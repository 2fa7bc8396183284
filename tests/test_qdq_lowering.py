"""QDQ lowering (hetc.passes.qdq): each rule on a small QDQ model, run by onnxruntime before and after.

Every model ends in a QuantizeLinear whose integers are the graph output, so the comparison is in quantisation
steps: the lowered graph must agree with onnxruntime's float-in-the-middle evaluation of the QDQ model within one
step per element (hetc.validate.integer), and most elements exactly.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.frontend import import_model
from hetc.ir import to_onnx
from hetc.passes import optimize
from hetc.passes.qdq import QDQ_NOTE

RNG_SEED = 11
U8, I8 = TensorProto.UINT8, TensorProto.INT8
NP = {U8: np.uint8, I8: np.int8}


class QDQ:
    """A tiny QDQ model: a float input quantized to ``act`` integers, ops written as DQ -> op -> Q."""

    def __init__(self, act: int = U8, shape: tuple[int, ...] = (1, 4, 8, 8)) -> None:
        self.rng = np.random.default_rng(RNG_SEED)
        self.act, self.shape = act, shape
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, array: np.ndarray) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.count}", domain=domain, **attrs))
        return out

    def quant(self, x: str, scale: float, zero: int) -> str:
        return self.node("QuantizeLinear", [x, self.const(np.float32(scale)), self.const(NP[self.act](zero))])

    def dq(self, q: str, scale: float, zero: int) -> str:
        return self.node("DequantizeLinear", [q, self.const(np.float32(scale)), self.const(NP[self.act](zero))])

    def weight(self, shape: tuple[int, ...], axis: int | None, dtype=np.int8, zero: int = 0) -> tuple[str, np.ndarray]:
        """DQ of a random integer weight, per channel along ``axis`` (None: per tensor)."""
        info = np.iinfo(dtype)
        q = self.rng.integers(info.min + 1, info.max, shape).astype(dtype)
        if axis is None:
            scale, zp = np.float32(0.02), dtype(zero)
            attrs = {}
        else:
            scale = (0.01 + 0.03 * self.rng.random(shape[axis])).astype(np.float32)
            zp, attrs = np.full(shape[axis], zero, dtype), {"axis": axis}
        return self.node("DequantizeLinear", [self.const(q), self.const(scale), self.const(zp)], **attrs), scale

    def bias(self, x_scale: float, w_scale: np.ndarray, channels: int) -> str:
        b = self.rng.integers(-2000, 2000, channels).astype(np.int32)
        scale = (np.float32(x_scale) * np.broadcast_to(w_scale, (channels,))).astype(np.float32)
        return self.node("DequantizeLinear", [self.const(b), self.const(scale), self.const(np.zeros(channels, np.int32))],
                         axis=0)

    def model(self, out: str, out_shape: tuple[int, ...]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)],
                                  [helper.make_tensor_value_info(out, self.act, out_shape)], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        onnx.checker.check_model(model, full_check=True)
        return model


def _ort(model: onnx.ModelProto, x: np.ndarray, optimize_graph: bool) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize_graph:   # onnxruntime's literal QDQ evaluation: dequantise, compute in float, quantise
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _exact(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The lowered graph with the ONNX semantics of its integer ops (int32 accumulation): onnx.reference, or
    onnxruntime for the contrib ops onnx.reference lacks. onnxruntime's own u8s8 QLinearConv on x86 without
    VNNI saturates 16-bit pair sums and is off by many steps on uint8 inputs near 255 with full-range weights."""
    if any(n.domain == "com.microsoft" for n in model.graph.node):
        return _ort(model, x, optimize_graph=False)
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def _lower(model: onnx.ModelProto):
    graph = optimize(import_model(model))
    lowered = to_onnx(graph)
    lowered.ir_version = 9
    return graph, lowered


def _check(model: onnx.ModelProto, expect_ops: dict[str, int], x_scale: float = 1.0):
    """Lower ``model``; the ops in ``expect_ops`` are there (count), no float op between the Q/DQ is left, and
    the integers agree with onnxruntime's QDQ evaluation within one step. Returns the lowered graph."""
    graph, lowered = _lower(model)
    histogram = graph.op_histogram()
    for op, count in expect_ops.items():
        assert histogram.get(op, 0) == count, histogram
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    x = (np.random.default_rng(5).standard_normal(shape) * x_scale).astype(np.float32)
    ours = _exact(lowered, x).astype(np.int64)
    literal = _ort(model, x, optimize_graph=False).astype(np.int64)
    assert ours.shape == literal.shape
    off = np.abs(ours - literal)
    assert off.max() <= 1, f"{off.max()} steps off"
    assert np.count_nonzero(off) <= max(2, off.size // 50), f"{np.count_nonzero(off)} of {off.size} elements off"
    float_weights = [v for v in graph.values.values() if v.is_const and v.dtype == "float32" and len(v.shape) >= 2]
    assert not float_weights, f"a float copy of a quantized weight: {float_weights}"
    return graph


@pytest.mark.parametrize("act", [U8, I8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_conv_becomes_qlinearconv_with_int32_bias(act: int, per_channel: bool) -> None:
    m = QDQ(act)
    zero = 128 if act == U8 else 3
    x = m.dq(m.quant("x", 0.05, zero), 0.05, zero)
    w, w_scale = m.weight((6, 4, 3, 3), 0 if per_channel else None)
    y = m.node("Conv", [x, w, m.bias(0.05, w_scale, 6)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = _check(m.model(m.quant(y, 0.2, zero), (1, 6, 8, 8)), {"QLinearConv": 1, "Conv": 0, "Relu": 0})
    conv = next(n for n in graph.nodes if n.op_type == "QLinearConv")
    assert conv.inputs[3].dtype == "int8" and conv.inputs[8].dtype == "int32"
    assert "QDQ groups lowered" in graph.metadata[QDQ_NOTE]


def test_uint8_asymmetric_weights_and_depthwise_group() -> None:
    m = QDQ(U8)
    x = m.dq(m.quant("x", 0.05, 120), 0.05, 120)
    w, _ = m.weight((4, 1, 3, 3), None, dtype=np.uint8, zero=131)
    y = m.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4)
    _check(m.model(m.quant(y, 0.1, 125), (1, 4, 8, 8)), {"QLinearConv": 1})


def test_relu_becomes_a_clamp_at_the_zero_point_unless_the_type_does_it() -> None:
    """int8 with zero point 10: Relu is max(q, 10), an integer Clip. uint8 with zero point 0: nothing."""
    m = QDQ(I8)
    x = m.dq(m.quant("x", 0.05, 0), 0.05, 0)
    w, _ = m.weight((4, 4, 1, 1), 0)
    y = m.node("Relu", [m.node("Conv", [x, w], kernel_shape=[1, 1])])
    graph = _check(m.model(m.quant(y, 0.05, 10), (1, 4, 8, 8)), {"QLinearConv": 1, "Clip": 1, "Relu": 0})
    clip = next(n for n in graph.nodes if n.op_type == "Clip")
    assert int(clip.inputs[1].const) == 10 and int(clip.inputs[2].const) == 127
    m = QDQ(U8)
    x = m.dq(m.quant("x", 0.05, 128), 0.05, 128)
    w, _ = m.weight((4, 4, 1, 1), 0)
    y = m.node("Relu", [m.node("Conv", [x, w], kernel_shape=[1, 1])])
    _check(m.model(m.quant(y, 0.05, 0), (1, 4, 8, 8)), {"QLinearConv": 1, "Clip": 0, "Relu": 0})


def test_clip_bounds_are_quantized() -> None:
    """Relu6 with an output range wider than [0, 6]: clamp to [Q(0), Q(6)] = [zp, zp + 6 / scale]."""
    m = QDQ(U8)
    x = m.dq(m.quant("x", 0.05, 128), 0.05, 128)
    w, _ = m.weight((4, 4, 3, 3), 0)
    conv = m.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = m.node("Clip", [conv, m.const(np.float32(0)), m.const(np.float32(6))])
    graph = _check(m.model(m.quant(y, 0.05, 20), (1, 4, 8, 8)), {"QLinearConv": 1, "Clip": 1}, x_scale=3.0)
    clip = next(n for n in graph.nodes if n.op_type == "Clip")
    assert (int(clip.inputs[1].const), int(clip.inputs[2].const)) == (20, 140)


@pytest.mark.parametrize("trans_b", [1, 0])
def test_gemm_becomes_a_1x1_qlinearconv_with_its_bias(trans_b: int) -> None:
    m = QDQ(U8, shape=(2, 32))
    x = m.dq(m.quant("x", 0.05, 128), 0.05, 128)
    w, w_scale = m.weight((10, 32) if trans_b else (32, 10), 0 if trans_b else 1)
    y = m.node("Gemm", [x, w, m.bias(0.05, w_scale, 10)], transB=trans_b)
    graph = _check(m.model(m.quant(y, 0.1, 128), (2, 10)), {"QLinearConv": 1, "Reshape": 2, "Gemm": 0})
    conv = next(n for n in graph.nodes if n.op_type == "QLinearConv")
    assert conv.inputs[3].shape == (10, 32, 1, 1)


def test_matmul_becomes_qlinearmatmul_per_column() -> None:
    m = QDQ(I8, shape=(3, 16))
    x = m.dq(m.quant("x", 0.05, -3), 0.05, -3)
    w, _ = m.weight((16, 8), 1)
    y = m.node("MatMul", [x, w])
    _check(m.model(m.quant(y, 0.1, 2), (3, 8)), {"QLinearMatMul": 1, "MatMul": 0})


def test_add_concat_and_pools_take_integer_forms() -> None:
    """Add -> QLinearAdd; Concat of equal quantisations -> Concat on the integers, of unequal ones ->
    QLinearConcat; GlobalAveragePool -> QLinearGlobalAveragePool; MaxPool and Reshape pass the integers."""
    m = QDQ(U8)
    q = m.quant("x", 0.05, 128)
    a = m.quant(m.node("MaxPool", [m.dq(q, 0.05, 128)], kernel_shape=[2, 2], strides=[2, 2]), 0.05, 128)
    b = m.quant(m.node("AveragePool", [m.dq(q, 0.05, 128)], kernel_shape=[2, 2], strides=[2, 2]), 0.04, 120)
    s = m.quant(m.node("Add", [m.dq(a, 0.05, 128), m.dq(b, 0.04, 120)]), 0.08, 128)
    same = m.quant(m.node("Concat", [m.dq(a, 0.05, 128), m.dq(a, 0.05, 128)], axis=1), 0.05, 128)
    mixed = m.quant(m.node("Concat", [m.dq(s, 0.08, 128), m.dq(same, 0.05, 128)], axis=1), 0.08, 128)
    pooled = m.quant(m.node("GlobalAveragePool", [m.dq(mixed, 0.08, 128)]), 0.08, 128)
    y = m.quant(m.node("Reshape", [m.dq(pooled, 0.08, 128), m.const(np.array([1, 12], np.int64))]), 0.08, 128)
    graph = _check(m.model(y, (1, 12)), {"QLinearAdd": 1, "Concat": 1, "QLinearConcat": 1, "MaxPool": 1,
                                          "QLinearAveragePool": 1, "QLinearGlobalAveragePool": 1, "Reshape": 1,
                                          "DequantizeLinear": 0, "QuantizeLinear": 1})
    assert graph.opset.get("com.microsoft") == 1


def test_what_cannot_be_lowered_stays_float_and_says_why() -> None:
    """A Reshape that requantises, a Softmax, and a Conv whose float output is also read elsewhere stay float
    with their Q/DQ; the weight stays int8 (its DequantizeLinear is not folded into a float copy)."""
    m = QDQ(U8)
    x = m.dq(m.quant("x", 0.05, 128), 0.05, 128)
    w, _ = m.weight((4, 4, 1, 1), 0)
    conv = m.node("Conv", [x, w], kernel_shape=[1, 1])
    side = m.node("Relu", [conv])
    q = m.quant(m.node("Add", [conv, side]), 0.1, 128)
    r = m.quant(m.node("Reshape", [m.dq(q, 0.1, 128), m.const(np.array([1, 256], np.int64))]), 0.2, 128)
    y = m.quant(m.node("Softmax", [m.dq(r, 0.2, 128)]), 1 / 256, 0)
    graph, _ = _lower(m.model(y, (1, 256)))
    histogram = graph.op_histogram()
    assert histogram["Conv"] == 1 and histogram["Softmax"] == 1 and histogram["Reshape"] == 1
    note = graph.metadata[QDQ_NOTE]
    assert "kept float" in note and "changes the quantisation" in note and "Softmax has no integer form" in note
    weight_dq = next(n for n in graph.nodes if n.op_type == "DequantizeLinear" and n.inputs[0].is_const)
    assert weight_dq.inputs[0].dtype == "int8"


def test_lowered_mobilenet_is_all_integer_and_keeps_its_weights_int8() -> None:
    """The committed QDQ MobileNetV2: every Conv and Gemm becomes QLinearConv, the residual Adds QLinearAdd;
    one QuantizeLinear (the input) and one DequantizeLinear (the logits) remain; no float weight."""
    from conftest import MODELS_DIR
    from hetc.frontend import load_onnx

    graph = optimize(load_onnx(MODELS_DIR / "mobilenet_v2_qdq.onnx"))
    histogram = graph.op_histogram()
    assert histogram["QLinearConv"] == 35 and histogram["QLinearAdd"] == 5
    assert histogram["QuantizeLinear"] == 1 and histogram["DequantizeLinear"] == 1
    assert not {"Conv", "Gemm", "Add"} & set(histogram)
    weights = [v for v in graph.values.values() if v.is_const and len(v.shape) >= 2]   # not the 1-D scales
    assert len(weights) == 35 and {v.dtype for v in weights} == {"int8"}
