"""The validation rule (hetc.validate.compare, docs/validation.md): hetc's error against a float64 reference
may be at most 16 times onnxruntime's float32 error. It accepts float32 noise at any output scale and on
ill-conditioned outputs, and rejects small real defects: one perturbed channel, one dropped partial sum, one
missing tile of a transfer, besides the plans broken on purpose in test_sim.py."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.codegen import Bundle, Compute, Dma
from hetc.pipeline import BuildOptions, build
from hetc.sim import simulate
from hetc.validate import compare, exact_outputs, make_inputs, reference_outputs, validate, widen_model
from hetc.validate.weights import randomize_weights

from test_sim_support import mixed_bundle, mixed_inputs, mixed_model


# ---------------------------------------------------------------------------------------------- the rule
def _big_dot(seed: int = 0, k: int = 4096, n: int = 1000):
    """Logits of scale ~1e4 from a long float32 dot product: onnxruntime's BLAS, a different (blocked)
    float32 summation order standing for hetc's kernels, and the exact float64 value."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 30, (1, k)).astype(np.float32)
    w = rng.normal(0, 30, (k, n)).astype(np.float32)
    expected = x @ w
    blocked = sum(x[:, i:i + 256] @ w[i:i + 256] for i in range(0, k, 256)).astype(np.float32)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    return blocked, expected, exact


def test_float32_noise_on_large_logits_passes_the_ratio_rule_but_not_the_fixed_tolerance():
    actual, expected, exact = _big_dot()
    assert np.abs(expected).max() > 1e4
    fixed = compare({"y": actual}, {"y": expected})
    assert not fixed.passed   # near-zero logits have large relative errors: the old rule's false alarm
    report = compare({"y": actual}, {"y": expected}, exact={"y": exact}, exact_source="numpy float64")
    row = report.outputs[0]
    assert report.passed and row.ratio is not None and row.ratio < 4
    assert row.hetc_err == pytest.approx(np.abs(actual - exact).max() / np.abs(exact).max())
    assert row.ort_err == pytest.approx(np.abs(expected - exact).max() / np.abs(exact).max())


def test_equal_logits_are_judged_against_one_ulp_of_the_scale():
    exact = np.full((1, 1000), 1 / 3)
    expected = exact.astype(np.float32)            # onnxruntime: correctly rounded, every logit equal
    one_ulp_off = np.nextafter(expected, np.float32(1))
    report = compare({"p": one_ulp_off}, {"p": expected}, exact={"p": exact}, exact_source="x")
    assert report.passed and report.outputs[0].ratio <= 2
    zeros = np.zeros(4, np.float32)                # exact agreement everywhere: ratio 0, no division by zero
    assert compare({"z": zeros}, {"z": zeros}, exact={"z": zeros.astype(np.float64)}, exact_source="x").passed


def test_one_perturbed_channel_fails_the_ratio_rule():
    actual, expected, exact = _big_dot()
    defect = actual.copy()
    defect[0, np.argmax(np.abs(actual))] *= 1 + 1e-4   # one output channel off by 0.01%
    report = compare({"y": defect}, {"y": expected}, exact={"y": exact}, exact_source="x")
    assert not report.passed and report.outputs[0].ratio > 16
    assert "ratio" in str(report) and "FAIL" in str(report)


def test_fp16_datapath_is_judged_against_half_precision_ulps():
    """At fp16 the floor is 2^-10 of the scale: 16 of those (1.6%) pass, more fails, whatever onnxruntime's
    float32 error."""
    exact = np.linspace(-50, 50, 101)
    expected = exact.astype(np.float32)
    rounded = exact.astype(np.float16).astype(np.float32) + 0.25   # 0.5% of the scale off
    kwargs = dict(exact={"y": exact}, exact_source="x")
    assert compare({"y": rounded}, {"y": expected}, "fp16", **kwargs).passed
    assert not compare({"y": rounded}, {"y": expected}, "fp32", **kwargs).passed
    assert not compare({"y": expected + 1.0}, {"y": expected}, "fp16", **kwargs).passed   # 2% of the scale


def test_nan_where_onnxruntime_is_finite_fails():
    exact = np.array([1.0, 2.0, 3.0])
    expected = exact.astype(np.float32)
    actual = expected.copy()
    actual[1] = np.nan
    assert not compare({"y": actual}, {"y": expected}, exact={"y": exact}, exact_source="x").passed


def test_report_carries_the_figures_in_text_and_json():
    actual, expected, exact = _big_dot()
    report = compare({"y": actual}, {"y": expected}, exact={"y": exact}, exact_source="onnx.reference float64")
    data = report.to_dict()
    assert data["reference"] == "onnx.reference float64" and data["max_ratio"] == report.outputs[0].ratio
    assert {"hetc_err", "ort_err", "ratio"} <= data["outputs"][0].keys() and "16 x" in data["rule"]
    text = str(report)
    assert "hetc err" in text and "ort err" in text and "reference: onnxruntime float32 and onnx.reference" in text
    fallback = compare({"y": actual}, {"y": expected})
    assert fallback.outputs[0].ratio is None and "onnxruntime float32 only" in str(fallback)


# ---------------------------------------------------------------------------------------------- float64 reference
def _cnn(opset: int = 17) -> onnx.ModelProto:
    """A small CNN with (before randomization) constant weights: conv, conv, pool, linear."""
    const = lambda name, shape: numpy_helper.from_array(np.full(shape, 0.02, np.float32), name)
    inits = [const("w1", (16, 8, 3, 3)), const("b1", (16,)), const("w2", (16, 16, 3, 3)), const("b2", (16,)),
             const("fc", (10, 16)), const("fcb", (10,)), numpy_helper.from_array(np.array([1, 16], np.int64), "s")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Reshape", ["p", "s"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return randomize_weights(model, seed=3)


def test_widened_model_computes_in_float64_but_keeps_float32_parameters():
    nodes = [helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Resize", ["f", "", "scales"], ["y"], mode="nearest")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("i", TensorProto.INT64, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    wide = widen_model(model)
    assert wide.graph.node[0].attribute[0].i == TensorProto.DOUBLE
    assert wide.graph.output[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert wide.graph.initializer[0].data_type == TensorProto.FLOAT   # Resize's scales stay float32
    x = np.arange(4, dtype=np.int64).reshape(1, 1, 2, 2)
    exact = exact_outputs(model, {"i": x})   # onnxruntime has no double Resize
    assert exact.source == "onnx.reference float64" and exact.outputs["y"].dtype == np.float64
    np.testing.assert_array_equal(exact.outputs["y"], reference_outputs(model, {"i": x})["y"])


def test_widened_constants_spelled_as_floats_become_float64():
    nodes = [helper.make_node("Constant", [], ["c"], value_float=0.1), helper.make_node("Mul", ["x", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    exact = exact_outputs(model, {"x": np.ones(3, np.float32)})
    assert exact.source == "onnxruntime float64"   # no float32/float64 mix for onnxruntime to refuse
    np.testing.assert_array_equal(exact.outputs["y"], np.float64(np.float32(0.1)))


def test_exact_reference_comes_from_onnxruntime_where_it_has_double_kernels():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (64, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = make_inputs(model)
    exact = exact_outputs(model, x)
    assert exact.source == "onnxruntime float64"
    np.testing.assert_allclose(exact.outputs["y"], x["x"].astype(np.float64) @ w.astype(np.float64), rtol=1e-12)


def test_exact_reference_of_a_cnn_comes_from_onnx_reference():
    model = _cnn()
    x = make_inputs(model)
    exact = exact_outputs(model, x)
    assert exact.source == "onnx.reference float64"   # onnxruntime has no double Conv
    np.testing.assert_allclose(exact.outputs["y"], reference_outputs(model, x)["y"], rtol=1e-4, atol=1e-4)


def test_old_opset_models_are_upgraded_for_onnx_reference():
    """onnx.reference runs opset-9 BatchNormalization with batch statistics; the upgraded model does not."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), n)
             for n in ("scale", "bias", "mean", "var")]
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"])]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 9
    x = make_inputs(model)
    exact = exact_outputs(model, x, evaluator_only=True)
    np.testing.assert_allclose(exact.outputs["y"], reference_outputs(model, x)["y"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- real defects
@pytest.fixture(scope="module")
def cnn_build():
    model = _cnn()
    result = build(model, BuildOptions(target="edge-soc", time_limit_s=5))
    return model, result.bundle, make_inputs(model)


def _check(model: onnx.ModelProto, bundle: Bundle, inputs):
    """The verdict as a build gives it: re-anchoring at the cut nodes allowed (hetc.validate.anchors), so a
    defect must fail that too."""
    return validate(model, simulate(bundle, inputs).outputs, inputs,
                    probe=lambda names: simulate(bundle, inputs, probes=names).probes)


def _with_constants(bundle: Bundle, weight: str, edit) -> Bundle:
    """``bundle`` with the constant ``weight`` (as the conv reading it sees it) edited in the DRAM image."""
    dram = bundle.manifest["constants"]["memory"]   # the image sits at offset 0 of this memory
    operand = next(i.src for p in bundle.programs.values() for i in p.instructions
                   if isinstance(i, Dma) and i.value == weight and i.src.memory == dram)
    image = bytearray(bundle.constants)
    array = np.frombuffer(image, np.float32, count=int(np.prod(operand.shape)), offset=operand.offset
                          ).reshape(operand.shape).copy()
    edit(array)
    image[operand.offset:operand.offset + array.nbytes] = array.tobytes()
    return replace(bundle, constants=bytes(image))


def _conv_weight(bundle: Bundle, index: int) -> str:
    convs = [i for p in bundle.programs.values() for i in p.instructions
             if isinstance(i, Compute) and i.op == "Conv"]
    convs.sort(key=lambda c: c.node)
    return convs[index].inputs[1].value


def test_the_untampered_build_passes(cnn_build):
    model, bundle, inputs = cnn_build
    report = _check(model, bundle, inputs)
    assert report.passed and report.exact_source == "onnx.reference float64", str(report)


def test_one_perturbed_output_channel_fails(cnn_build):
    model, bundle, inputs = cnn_build

    def perturb(w):
        w[5] *= 1 + 1e-3   # one output channel of the second conv, 0.1%
    report = _check(model, _with_constants(bundle, _conv_weight(bundle, 1), perturb), inputs)
    assert not report.passed and report.outputs[0].ratio > 16, str(report)
    assert report.anchors and not report.anchors[0].passed   # the Gemm's input carries the defect


def test_dropped_partial_sum_fails(cnn_build):
    model, bundle, inputs = cnn_build

    def drop(w):
        w[2, :8] = 0.0   # output channel 2 of the second conv loses the partial sum over input channels 0-7
    assert not _check(model, _with_constants(bundle, _conv_weight(bundle, 1), drop), inputs).passed


def test_one_missing_tile_of_a_transfer_fails(cnn_build):
    """The input's DMA stops one 2-row tile (of one channel) short: those bytes keep what was there."""
    model, bundle, inputs = cnn_build
    engine, pc, dma = next((e, pc, i) for e, p in bundle.programs.items() for pc, i in enumerate(p.instructions)
                           if isinstance(i, Dma) and i.value == "x")
    short = replace(dma, bytes=dma.bytes - 2 * 16 * 4)
    program = bundle.programs[engine]
    instructions = program.instructions[:pc] + (short,) + program.instructions[pc + 1:]
    broken = replace(bundle, programs={**bundle.programs, engine: replace(program, instructions=instructions)})
    assert not _check(model, broken, inputs).passed


@pytest.mark.parametrize("case", ["shifted offset", "dropped dma"])
def test_plans_broken_on_purpose_fail_validation(case):
    """test_sim.py's broken plans, judged by the validation rule rather than by allclose."""
    from test_sim import edit, find

    bundle = mixed_bundle()
    if case == "shifted offset":
        pc = find(bundle, "dsp", lambda i: isinstance(i, Compute) and i.op == "Gemm")
        gemm = bundle.programs["dsp"].instructions[pc]
        shifted = replace(gemm.inputs[0], offset=gemm.inputs[0].offset + 64)
        broken = edit(bundle, "dsp", pc, replace(gemm, inputs=(shifted,) + gemm.inputs[1:]))
    else:
        broken = edit(bundle, "dma_dsp", find(bundle, "dma_dsp", lambda i: isinstance(i, Dma) and i.value == "scale"))
    inputs = mixed_inputs()
    assert _check(mixed_model(), bundle, inputs).passed
    report = _check(mixed_model(), broken, inputs)
    assert not report.passed and report.anchors, str(report)   # re-anchored, and still failing


# ---------------------------------------------------------------------------------------------- light models
def _logits(name: str, randomize: bool) -> onnx.ModelProto:
    """A light model (weights randomized or the model's constants) with its final Softmax cut: the output is
    the logits, whose scale and near-zero elements broke the fixed tolerance."""
    from conftest import light_model_path

    model = onnx.load(light_model_path(name))
    model = randomize_weights(model, seed=0) if randomize else model
    softmax = model.graph.node[-1]
    assert softmax.op_type == "Softmax"
    model.graph.node.remove(softmax)
    model.graph.output[0].name = softmax.input[0]
    return model


def test_randomized_light_models_get_random_weights():
    from conftest import light_model_path

    model = randomize_weights(onnx.load(light_model_path("squeezenet")), seed=0)
    weight = next(t for t in model.graph.initializer if t.name == "conv1_w_0")
    values = numpy_helper.to_array(weight)
    assert values.shape == (64, 3, 3, 3) and values.std() == pytest.approx(np.sqrt(2 / 27), rel=0.1)
    assert not any(n.op_type == "ConstantOfShape" and n.output[0] == "conv1_w_0" for n in model.graph.node)
    assert "conv1_w_0" in {i.name for i in model.graph.input}   # IR 3: initializers are graph inputs
    onnx.checker.check_model(model)


def test_a_weight_reshaped_before_its_gemm_is_randomized_too():
    """Inception-v1's classifier weight reaches its Gemm through a Reshape: it stayed 0.02 everywhere, so every
    logit was equal whatever the random convolutions computed."""
    from conftest import light_model_path

    model = randomize_weights(onnx.load(light_model_path("inception_v1")), seed=0)
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight, bias = values["loss3/classifier_w_0"], values["loss3/classifier_b_0"]
    assert weight.shape == (1, 1, 1000, 1024) and weight.std() == pytest.approx(np.sqrt(2 / 1024), rel=0.05)
    assert bias.std() > 0.01
    onnx.checker.check_model(model)


@pytest.mark.parametrize("randomize", [False, True], ids=["equal logits", "random weights"])
def test_squeezenet_on_edge_soc_passes(randomize):
    result = build(_logits("squeezenet", randomize), BuildOptions(target="edge-soc", validate=True, time_limit_s=5))
    report = result.validation
    assert report.passed and report.exact_source == "onnx.reference float64", str(report)
    assert result.summary["validation"]["max_ratio"] == report.max_ratio <= 16
    numerics = result.bundle.report[result.bundle.report.index("Numerics vs onnxruntime"):]
    assert "hetc err" in numerics and "ort err" in numerics and "ratio" in numerics
    assert "reference: onnxruntime float32 and onnx.reference float64" in numerics


@pytest.mark.slow
def test_resnet50_logits_of_large_scale_pass_where_the_fixed_tolerance_failed():
    # Random weights normalise now (logits of about 5); a classifier a thousand times larger gives the logits of
    # 10^3-10^4 that uncalibrated statistics used to, where the old per-element rule cried wolf.
    model = _logits("resnet50", randomize=True)
    classifier = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    for tensor in model.graph.initializer:
        if tensor.name in classifier.input[1:]:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1000), tensor.name))
    result = build(model, BuildOptions(target="edge-soc", validate=True, time_limit_s=10))
    report = result.validation
    assert report.passed, str(report)
    inputs = make_inputs(model)
    expected = reference_outputs(model, inputs)
    assert np.abs(next(iter(expected.values()))).max() > 1e3
    assert not compare(result.sim.outputs, expected).passed   # the old per-element rule's false alarm


def test_hetc_validate_prints_the_figures_and_the_references() -> None:
    """The console script: text and --json carry hetc's and onnxruntime's errors and their ratio."""
    import json

    from cli_subprocess import run_hetc
    from conftest import MODELS_DIR

    model = MODELS_DIR / "tiny_cnn.onnx"
    text = run_hetc("validate", model, "--scheduler", "heft", "--weights", "random")
    assert text.returncode == 0, text.stderr
    assert "hetc err" in text.stdout and "ort err" in text.stdout and "ratio" in text.stdout
    assert "reference: onnxruntime float32 and " in text.stdout and "16 x max(onnxruntime error" in text.stdout
    header = next(line for line in text.stdout.splitlines() if line.startswith("output"))
    assert header.split() == ["output", "shape", "dtype", "max", "abs", "err", "hetc", "err", "ort", "err", "ratio",
                              "cosine", "result"]   # one line, whatever the terminal width
    data = json.loads(run_hetc("validate", model, "--scheduler", "heft", "--weights", "random", "--json").stdout)
    assert data["passed"] and data["reference"].endswith("float64") and data["max_ratio"] <= 16
    assert all(o["ratio"] is not None and o["hetc_err"] is not None and o["ort_err"] is not None
               for o in data["outputs"])


def test_exact_reference_normalises_every_channel_of_an_lrn():
    """onnx.reference's own LRN normalises channel 0 only (it loops over the batch): the float64 reference of
    an LRN model was off by far more than float32 noise, and the rule tolerated 16 times that in hetc."""
    node = helper.make_node("LRN", ["x"], ["y"], size=5, alpha=0.5, beta=0.75, bias=1.0)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    x = make_inputs(model)
    exact = exact_outputs(model, x)
    assert exact.source == "onnx.reference float64"   # onnxruntime has no double LRN
    np.testing.assert_allclose(exact.outputs["y"], reference_outputs(model, x)["y"], rtol=1e-6, atol=1e-7)
