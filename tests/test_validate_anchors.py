"""Re-anchoring (hetc.validate.anchors, docs/validation.md): an output that misses the rule end to end is
judged from hetc's own values at its cut nodes. Legitimate float32 differences amplified by a cut node pass:
a Softmax of equal logits whose logits are each one ulp off (another summation order), a quantizer whose input
is one ulp off and rounds the other way. Small real defects on either side of a cut still fail: one logit
channel, one wrong softmax element, one wrong quantized value, one dropped partial sum, one channel upstream.

The deviations are injected through the simulator's ``kernel`` hook, which runs hetc's own kernels and then
edits one op's results, as a kernel with a different summation order or a bug would."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.pipeline import BuildOptions, build
from hetc.sim import simulate
from hetc.sim.kernels import run_kernel
from hetc.validate import validate
from hetc.validate.anchors import cut_nodes, is_step


def _kernel(op: str, edit: Callable[[np.ndarray], np.ndarray] | None):
    """hetc's kernels, with ``edit`` applied to the first result of every ``op``."""
    def kernel(kind: str, op_type: str, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        results = run_kernel(kind, op_type, *args, **kwargs)
        if op_type == op and edit is not None:
            results = [edit(np.array(results[0]))] + list(results[1:])
        return results
    return kernel


def _validate(model: onnx.ModelProto, bundle, inputs, kernel, anchored: bool = True):
    sim = simulate(bundle, inputs, kernel=kernel)
    probe = (lambda names: simulate(bundle, inputs, kernel=kernel, probes=names).probes) if anchored else None
    return validate(model, sim.outputs, inputs, probe=probe)


def _one_ulp_off(seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Each element one ulp up or down (seeded): what another float32 summation order does to a dot product."""
    def edit(x: np.ndarray) -> np.ndarray:
        up = np.random.default_rng(seed).random(x.shape) < 0.5
        return np.where(up, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf)))
    return edit


# ---------------------------------------------------------------------------------------------- Softmax
def _equal_logits_model() -> onnx.ModelProto:
    """Logits of scale ~100, all equal (every column of the weight is the same), then Softmax."""
    rng = np.random.default_rng(0)
    column = rng.normal(0, 1, (64, 1)).astype(np.float32)
    weight = np.repeat(column, 10, axis=1)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["p"])]
    graph = helper.make_graph(nodes, "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


@pytest.fixture(scope="module")
def softmax_build():
    model = _equal_logits_model()
    x = np.random.default_rng(1).normal(0, 1, (1, 64)).astype(np.float32)
    x *= 100 / abs(float((x @ onnx.numpy_helper.to_array(model.graph.initializer[0]))[0, 0]))
    return model, build(model, BuildOptions(target="edge-soc", time_limit_s=5)).bundle, {"x": x}


def test_logits_one_ulp_apart_pass_from_the_softmax_inputs(softmax_build):
    model, bundle, inputs = softmax_build
    kernel = _kernel("MatMul", _one_ulp_off(0))
    plain = _validate(model, bundle, inputs, kernel, anchored=False)
    assert not plain.passed and plain.outputs[0].ratio > 16, str(plain)   # the end-to-end rule alone: too strict
    report = _validate(model, bundle, inputs, kernel)
    assert report.passed, str(report)
    assert "cut node" in report.outputs[0].note and "cut checks" in str(report)
    names = [a.name for a in report.anchors]
    assert names == ["logits (input of a cut node)", "p (as its cut node wrote it)", "p (Softmax on hetc's inputs)"]
    assert report.to_dict()["anchors"][0]["ratio"] is not None


def test_one_wrong_logit_fails_at_the_softmax_inputs(softmax_build):
    model, bundle, inputs = softmax_build

    def one_channel(x: np.ndarray) -> np.ndarray:
        x[..., 3] *= 1 + 1e-5   # one logit off by 0.001%: ~80 ulps of the logits' scale
        return x
    report = _validate(model, bundle, inputs, _kernel("MatMul", one_channel))
    assert not report.passed and not report.anchors[0].passed, str(report)


def test_one_wrong_softmax_element_fails_at_the_softmax(softmax_build):
    model, bundle, inputs = softmax_build
    ulps = _one_ulp_off(0)

    def wrong(x: np.ndarray) -> np.ndarray:
        x[..., 7] *= 1 + 1e-4
        return x
    kernel = _kernel("MatMul", ulps)
    kernel_with_bug = lambda kind, op, *a, **k: (  # noqa: E731
        _kernel("Softmax", wrong) if op == "Softmax" else kernel)(kind, op, *a, **k)
    report = _validate(model, bundle, inputs, kernel_with_bug)
    assert not report.passed, str(report)
    assert [a.passed for a in report.anchors] == [True, True, False]


# ---------------------------------------------------------------------------------------------- quantizer
def _quantized_model() -> onnx.ModelProto:
    """Relu, then dynamic quantization and an integer matmul, rescaled to float (onnx.quantize's pattern)."""
    rng = np.random.default_rng(2)
    weight = rng.integers(-100, 100, (16, 4)).astype(np.int8)
    inits = [numpy_helper.from_array(weight, "wq"), numpy_helper.from_array(np.array(0, np.int8), "wzp"),
             numpy_helper.from_array(np.array(0.01, np.float32), "ws")]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("DynamicQuantizeLinear", ["r"], ["q", "s", "zp"]),
             helper.make_node("MatMulInteger", ["q", "wq", "zp", "wzp"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "ws"], ["scale"]),
             helper.make_node("Mul", ["accf", "scale"], ["y"])]
    graph = helper.make_graph(nodes, "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


@pytest.fixture(scope="module")
def quantized_build():
    model = _quantized_model()
    # max 255 makes the scale exactly 1 and the zero point 0: x.5 values sit on a rounding boundary.
    x = np.array([[255.0, 10.5, 3.5, 100.5, 7.25, 0.0, 1.5, 30.0, 64.5, 2.0, 9.75, 200.5, 5.5, 11.0, 17.5, 42.0]],
                 np.float32)
    return model, build(model, BuildOptions(target="edge-soc", time_limit_s=5)).bundle, {"x": x}


def _ulp_up_on_half_values(x: np.ndarray) -> np.ndarray:
    """One ulp up where the value is k + 0.5: a float op landing one ulp from onnxruntime's result, which
    then rounds the other way (hetc's and onnxruntime's Sigmoid on ddddocr_ocr_int8)."""
    half = (x % 1) == 0.5
    return np.where(half, np.nextafter(x, np.float32(np.inf)), x)


def test_a_rounding_flipped_by_one_ulp_passes_from_the_quantizer_inputs(quantized_build):
    model, bundle, inputs = quantized_build
    kernel = _kernel("Relu", _ulp_up_on_half_values)
    assert _validate(model, bundle, inputs, _kernel("Relu", None)).passed   # untampered
    plain = _validate(model, bundle, inputs, kernel, anchored=False)
    assert not plain.passed, str(plain)   # a quantisation step away end to end
    report = _validate(model, bundle, inputs, kernel)
    assert report.passed, str(report)
    checked = {a.name.split(" ")[0] for a in report.anchors}
    assert {"r", "q", "s", "zp", "y"} <= checked


def test_one_wrong_quantized_value_fails_at_the_quantizer(quantized_build):
    model, bundle, inputs = quantized_build

    def off_by_one(q: np.ndarray) -> np.ndarray:
        q[0, 4] += 1   # 7.25 quantized as 8: no input explains it
        return q
    base = _kernel("Relu", _ulp_up_on_half_values)
    bug = _kernel("DynamicQuantizeLinear", off_by_one)
    kernel = lambda kind, op, *a, **k: (bug if op == "DynamicQuantizeLinear" else base)(kind, op, *a, **k)  # noqa: E731
    report = _validate(model, bundle, inputs, kernel)
    assert not report.passed, str(report)
    assert any("q (DynamicQuantizeLinear" in a.name and not a.passed for a in report.anchors)


def test_a_dropped_partial_sum_after_the_quantizer_fails(quantized_build):
    model, bundle, inputs = quantized_build
    q_weight = onnx.numpy_helper.to_array(model.graph.initializer[0]).astype(np.int32)

    def drop(acc: np.ndarray) -> np.ndarray:
        acc[0, 2] -= 10 * q_weight[1, 2]   # output 2 loses the partial sum of input 1 (quantized 10)
        return acc
    base = _kernel("Relu", _ulp_up_on_half_values)
    bug = _kernel("MatMulInteger", drop)
    kernel = lambda kind, op, *a, **k: (bug if op == "MatMulInteger" else base)(kind, op, *a, **k)  # noqa: E731
    report = _validate(model, bundle, inputs, kernel)
    assert not report.passed, str(report)
    # y's producer (the final Mul) is cut too: the dropped sum shows in its input, computed from hetc's q
    assert any(a.name.startswith("accf (input") and not a.passed for a in report.anchors)


def test_one_wrong_channel_before_the_quantizer_fails(quantized_build):
    model, bundle, inputs = quantized_build

    def wrong(x: np.ndarray) -> np.ndarray:
        x = _ulp_up_on_half_values(x)
        x[0, 9] *= 1 + 1e-3
        return x
    report = _validate(model, bundle, inputs, _kernel("Relu", wrong))
    assert not report.passed and not report.anchors[0].passed, str(report)


def test_cut_nodes_are_the_steps_and_the_failing_outputs_producers():
    model = _quantized_model()
    assert [n.op_type for n in cut_nodes(model, [])] == ["DynamicQuantizeLinear"]
    assert [n.op_type for n in cut_nodes(model, ["y"])] == ["DynamicQuantizeLinear", "Mul"]
    cast = helper.make_node("Cast", ["a"], ["b"], to=TensorProto.INT32)
    assert is_step(cast) and not is_step(helper.make_node("Cast", ["a"], ["b"], to=TensorProto.FLOAT))
    reshaped = _equal_logits_model()
    reshaped.graph.node.append(helper.make_node("Flatten", ["p"], ["flat"]))
    assert [n.op_type for n in cut_nodes(reshaped, ["flat"])] == ["Softmax"]   # behind data movement


def test_without_the_probed_values_the_rule_stands(softmax_build):
    model, bundle, inputs = softmax_build
    sim = simulate(bundle, inputs, kernel=_kernel("MatMul", _one_ulp_off(0)))
    report = validate(model, sim.outputs, inputs, probe=lambda names: {})
    assert not report.passed and report.anchors == ()
