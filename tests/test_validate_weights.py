"""randomize_weights: seeded, fan-in-scaled random initializers for meaningful validation."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
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
