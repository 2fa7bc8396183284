"""randomize_weights: seeded, fan-in-scaled random initializers for meaningful validation."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.validate.weights import randomize_weights


def _model() -> onnx.ModelProto:
    const = lambda name, shape, value: numpy_helper.from_array(np.full(shape, value, np.float32), name)
    inits = [const("w", (16, 3, 3, 3), 0.02), const("b", (16,), 0.02), const("scale", (16,), 0.02),
             const("bias", (16,), 0.02), const("mean", (16,), 0.02), const("var", (16,), 0.02),
             const("fc", (10, 16), 0.02), const("fcb", (10,), 0.02),
             numpy_helper.from_array(np.array([1, 16], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_randomize_weights_is_seeded_and_fan_in_scaled():
    model = _model()
    a, b, c = (_arrays(randomize_weights(model, seed)) for seed in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["w"], c["w"])
    np.testing.assert_array_equal(a["shape"], [1, 16])  # integer constants untouched
    assert abs(a["w"].std() - np.sqrt(2 / 27)) < 0.3 * np.sqrt(2 / 27)  # He by fan-in 3*3*3
    assert abs(a["fc"].std() - np.sqrt(2 / 16)) < 0.5 * np.sqrt(2 / 16)  # Gemm transB: fan-in is dim 1
    assert (a["var"] > 0).all() and abs(a["scale"].mean() - 1) < 0.2
    assert np.abs(a["b"]).max() < 0.5
    assert _arrays(model)["w"].max() == np.float32(0.02)  # the input model is not modified


def test_random_weights_make_outputs_distinct():
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    constant, random = run(_model()), run(randomize_weights(_model()))
    assert np.ptp(constant) < 1e-6  # the constant-weight model's logits all tie
    assert np.ptp(random) > 0.1 and np.isfinite(random).all()


def test_build_validates_with_random_weights():
    import pytest

    from hetc.errors import HetcError
    from hetc.pipeline import BuildOptions, build

    result = build(_model(), BuildOptions(validate=True, weights="random"))
    assert result.validation is not None and result.validation.passed
    with pytest.raises(HetcError, match="choose one of"):
        build(_model(), BuildOptions(weights="zeros"))


def test_float_parameters_are_kept():
    """A Resize's scales and a Clip's bounds are semantics: randomising them changed unet's shapes."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    low, high = (numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0)))
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest"),
             helper.make_node("Clip", ["r", "lo", "hi"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
                              initializer=[scales, low, high])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 9
    kept = _arrays(randomize_weights(model))
    np.testing.assert_array_equal(kept["scales"], [1, 1, 2, 2])
    assert kept["lo"] == 0 and kept["hi"] == 6


def _residual_stack(blocks: int) -> onnx.ModelProto:
    """``blocks`` residual blocks of Conv -> BatchNormalization -> Relu added to their input, then a Gemm: the
    shape of ResNet's trunk, where random statistics let the activations grow block after block."""
    nodes, inits, x = [], [], "x"
    for k in range(blocks):
        nodes += [helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{k}", f"s{k}", f"b{k}", f"m{k}", f"v{k}"], [f"n{k}"]),
                  helper.make_node("Relu", [f"n{k}"], [f"r{k}"]),
                  helper.make_node("Add", [x, f"r{k}"], [f"a{k}"])]
        inits += [numpy_helper.from_array(np.zeros((8, 8, 3, 3), np.float32), f"w{k}")]
        inits += [numpy_helper.from_array(np.zeros(8, np.float32), f"{p}{k}") for p in "sbmv"]
        x = f"a{k}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    inits.append(numpy_helper.from_array(np.zeros((10, 8), np.float32), "fc"))
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _values(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).standard_normal((1, 8, 12, 12)).astype(np.float32)   # not the calibration input
    return dict(zip(names, session.run(names, {"x": x})))


def test_batch_norms_normalise_their_inputs_as_trained_ones_do():
    model = randomize_weights(_residual_stack(12), seed=0)
    values = _values(model, [f"n{k}" for k in range(12)] + ["y"])
    for k in range(12):   # each BatchNormalization's output: about zero mean, unit spread per channel
        n = values[f"n{k}"]
        assert abs(float(n.mean())) < 0.5 and 0.5 < float(n.std()) < 2.0, (k, n.mean(), n.std())
    assert float(np.abs(values["y"]).max()) < 100   # logits of a sensible scale, not one-hot after a Softmax


def test_uncalibrated_statistics_would_let_the_activations_grow(monkeypatch):
    # the control for the test above: with the statistics left as drawn, the same stack's last normalised
    # activations are far from unit scale
    import importlib

    monkeypatch.setattr(importlib.import_module("hetc.validate.weights"), "calibrate_batch_norms",
                        lambda model, seed=0: None)
    n = _values(randomize_weights(_residual_stack(12), seed=0), ["n11"])["n11"]
    assert float(n.std()) > 10


def test_a_batch_norm_over_one_value_per_channel_keeps_its_random_statistics():
    # [1, C] input: one value per channel, no variance to measure
    graph = helper.make_graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], "bn1",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.full(4, 0.02, np.float32), n) for n in "sbmv"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    var = _arrays(randomize_weights(model, 0))["v"]
    assert (var >= 0.5).all() and (var <= 1.5).all()   # drawn, not measured


def test_a_model_onnxruntime_cannot_run_keeps_drawn_statistics_with_a_warning():
    # opset 99 of the default domain: onnxruntime refuses to load it (onnx.reference validates such models)
    model = _residual_stack(2)
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 99))
    with pytest.warns(RuntimeWarning, match="BatchNormalization statistics left as drawn"):
        var = _arrays(randomize_weights(model, 0))["v0"]
    assert (var >= 0.5).all() and (var <= 1.5).all()


def test_a_random_weights_bundle_names_its_file_and_validates_against_it(tmp_path):
    """The bundle records the file it was built from (its sha256) and the seed: validating the bundle against
    that file randomizes it the same way, so the outputs agree (with the file's own weights they would not)."""
    from hetc.api import validate_bundle
    from hetc.pipeline import BuildOptions, build, file_sha256

    path = tmp_path / "m.onnx"
    onnx.save(_model(), path)
    bundle = build(path, BuildOptions(weights="random", input_seed=3)).bundle
    assert bundle.manifest["model"] == {"name": "m.onnx", "sha256": file_sha256(path), "random_weights_seed": 3}
    assert validate_bundle(bundle, path).report.passed
    own = build(path, BuildOptions()).bundle
    assert own.manifest["model"] == {"name": "m.onnx", "sha256": file_sha256(path)}
    assert own.constants != bundle.constants   # so the check above compared against the random weights
