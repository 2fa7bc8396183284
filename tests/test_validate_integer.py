"""The integer numerics rule (hetc.validate.integer): passes honest integer runs, catches real defects."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import hetc.passes.qdq as qdq
from conftest import MODELS_DIR
from hetc.validate import validate
from hetc.validate.integer import MAX_OFF_BY_ONE, IntegerValidationReport, compare_quantized, integer_reference, \
    is_quantized

MODEL = MODELS_DIR / "mobilenet_v2_qdq.onnx"


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(str(MODEL))


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)}


@pytest.fixture(scope="module")
def honest(model, inputs) -> dict[str, np.ndarray]:
    """Outputs of a correct integer execution: onnxruntime running the lowered graph."""
    return integer_reference(model, inputs)[0]


def test_an_honest_integer_run_passes_and_reports_its_counts(model, inputs, honest) -> None:
    report = compare_quantized(model, honest, inputs)
    assert report.passed, str(report)
    quantizers = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert len(report.lowering) == quantizers == 43 and all(c.passed for c in report.lowering)
    assert report.outputs[0].note == "exact"
    text = str(report)
    assert "groups within one step" in text and "elements off by one step" in text
    summary = report.summary()
    assert summary["rule"] == "integer" and summary["groups_failed"] == 0 and summary["passed"]


def test_validate_dispatches_quantized_models_to_the_integer_rule(model, inputs, honest) -> None:
    report = validate(MODEL, honest, inputs)
    assert isinstance(report, IntegerValidationReport) and report.passed
    assert is_quantized(model) and not is_quantized(onnx.load(str(MODELS_DIR / "mobilenet_v2.onnx")))


def test_a_logit_one_step_off_fails(model, inputs, honest) -> None:
    """A float output after the final DequantizeLinear is judged in its steps: one step anywhere fails."""
    scale = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "logits_scale")
    wrong = {"logits": honest["logits"].copy()}
    wrong["logits"][0, 17] += float(scale)
    report = compare_quantized(model, wrong, inputs)
    assert not report.passed and "1 steps" in report.outputs[0].note


def _perturb_first_conv(monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Make the lowering write a wrong QLinearConv (only the one that reads the first input it is asked about:
    the planner runs once to decide and once to build)."""
    original = qdq._conv_inputs
    first: list[str] = []

    def wrong_inputs(x, w, out, w_q, bias):
        inputs = original(x, w, out, w_q, bias)
        first[:] = first or [x.q.name]
        return change(inputs) if x.q.name == first[0] else inputs

    monkeypatch.setattr(qdq, "_conv_inputs", wrong_inputs)


def test_a_wrong_output_zero_point_fails(monkeypatch, model, inputs) -> None:
    """A zero point one off moves every element one step: within one step, but far more than the
    MAX_OFF_BY_ONE share of elements a rounding tie explains."""
    def shift_zero_point(inputs):
        zero = inputs[7]
        shifted = qdq._new_const(zero.name + "_wrong", (zero.const.astype(np.int16) + 1).astype(zero.const.dtype))
        return inputs[:7] + [shifted] + inputs[8:]

    _perturb_first_conv(monkeypatch, shift_zero_point)
    lowered_outputs = integer_reference(model, inputs)[0]
    report = compare_quantized(model, lowered_outputs, inputs)
    failed = [c for c in report.lowering if not c.passed]
    assert not report.passed and len(failed) == 1
    assert failed[0].off_by_one > MAX_OFF_BY_ONE * failed[0].size and failed[0].beyond_one == 0


def test_one_channels_scale_off_by_two_percent_fails(monkeypatch, model, inputs) -> None:
    def scale_one_channel(inputs):
        scale = inputs[4]
        wrong = scale.const.copy()
        wrong[3] *= 1.02
        return inputs[:4] + [qdq._new_const(scale.name + "_wrong", wrong)] + inputs[5:]

    _perturb_first_conv(monkeypatch, scale_one_channel)
    report = compare_quantized(model, integer_reference(model, inputs)[0], inputs)
    failed = [c for c in report.lowering if not c.passed]
    assert not report.passed and len(failed) == 1 and failed[0].beyond_one > 0


def test_one_channels_scale_off_by_a_fifth_of_a_percent_fails_by_its_count(monkeypatch, model, inputs) -> None:
    """0.2% on one channel's scale moves no element by more than one step, but hundreds by one."""
    def scale_one_channel(inputs):
        scale = inputs[4]
        wrong = scale.const.copy()
        wrong[3] *= 1.002
        return inputs[:4] + [qdq._new_const(scale.name + "_wrong", wrong)] + inputs[5:]

    _perturb_first_conv(monkeypatch, scale_one_channel)
    report = compare_quantized(model, integer_reference(model, inputs)[0], inputs)
    failed = [c for c in report.lowering if not c.passed]
    assert len(failed) == 1 and failed[0].beyond_one == 0 and failed[0].off_by_one > MAX_OFF_BY_ONE * failed[0].size


def test_an_integer_output_must_be_exact() -> None:
    """A model whose output is the integers of its last QuantizeLinear: one element one step off fails."""
    from test_qdq_lowering import QDQ, U8

    m = QDQ(U8)
    x = m.dq(m.quant("x", 0.05, 128), 0.05, 128)
    w, _ = m.weight((4, 4, 1, 1), 0, zero=0)
    model = m.model(m.quant(m.node("Conv", [x, w], kernel_shape=[1, 1]), 0.1, 128), (1, 4, 8, 8))
    feeds = {"x": np.random.default_rng(2).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    honest = integer_reference(model, feeds)[0]
    assert compare_quantized(model, honest, feeds).passed
    name, value = next(iter(honest.items()))
    wrong = value.copy()
    wrong.reshape(-1)[5] += 1
    report = compare_quantized(model, {name: wrong}, feeds)
    assert not report.passed and report.outputs[0].hetc_err == 1.0


def test_build_validates_the_qdq_model_by_the_integer_rule() -> None:
    from hetc.pipeline import BuildOptions, build

    result = build(MODEL, BuildOptions(target="edge-soc", validate=True, scheduler="heft"))
    assert isinstance(result.validation, IntegerValidationReport) and result.validation.passed
    assert result.summary["validation"]["rule"] == "integer"
    assert result.graph.op_histogram()["QLinearConv"] == 35
