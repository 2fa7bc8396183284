"""The validator: seeded inputs, .npz loading with checked errors, the onnxruntime reference, comparison
and its report."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import MODELS_DIR
from hetc.errors import ModelError, ValidationError
from hetc.frontend import load_onnx
from hetc.validate import (TOLERANCES, compare, input_specs, load_inputs_npz, make_inputs, reference_outputs,
                           validate)

SPECS = {"image": ("float32", (1, 3, 4, 4)), "ids": ("int64", (2, 5)), "mask": ("bool", (3,)),
         "half": ("float16", (2,))}


def _add_model(ir_version: int | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]),
         helper.make_node("Cast", ["sum"], ["count"], to=TensorProto.INT64)],
        "add", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("count", TensorProto.INT64, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def test_make_inputs_is_seeded_and_typed():
    first, again, other = make_inputs(SPECS, seed=3), make_inputs(SPECS, seed=3), make_inputs(SPECS, seed=4)
    for name, (dtype, shape) in SPECS.items():
        assert first[name].dtype == np.dtype(dtype) and first[name].shape == shape
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["image"], other["image"])
    ids = make_inputs(SPECS, int_range=(5, 7))["ids"]
    assert ids.min() >= 5 and ids.max() <= 6


def test_make_inputs_from_graph_and_model():
    graph = load_onnx(MODELS_DIR / "tiny_cnn.onnx")
    model = onnx.load(MODELS_DIR / "tiny_cnn.onnx")
    from_graph, from_model = make_inputs(graph), make_inputs(model)
    from_path = make_inputs(str(MODELS_DIR / "tiny_cnn.onnx"))
    assert from_graph.keys() == from_model.keys() == from_path.keys()
    for name in from_graph:
        np.testing.assert_array_equal(from_graph[name], from_model[name])
        np.testing.assert_array_equal(from_graph[name], from_path[name])


def test_make_inputs_errors_name_the_fix():
    with pytest.raises(ValidationError, match="symbolic dimension.*--shape b="):
        make_inputs(_add_model())
    with pytest.raises(ValidationError, match="does not fit input 'u'"):
        make_inputs({"u": ("uint8", (2,))}, int_range=(-5, 3))
    with pytest.raises(ValidationError, match="empty"):
        make_inputs(SPECS, int_range=(3, 3))
    with pytest.raises(ValidationError, match=r"\.npz"):
        make_inputs({"s": ("string", (2,))})


def test_load_inputs_npz_checks_names_dtypes_and_shapes(tmp_path):
    specs = {"a": ("float32", (2, 3)), "b": ("int64", (4,))}
    good = make_inputs(specs)
    np.savez(tmp_path / "good.npz", **good)
    loaded = load_inputs_npz(tmp_path / "good.npz", specs)
    np.testing.assert_array_equal(loaded["b"], good["b"])

    np.savez(tmp_path / "missing.npz", a=good["a"], c=good["b"])
    with pytest.raises(ValidationError, match="missing b; unknown c; the model's inputs are a, b"):
        load_inputs_npz(tmp_path / "missing.npz", specs)
    np.savez(tmp_path / "dtype.npz", a=good["a"].astype(np.float64), b=good["b"])
    with pytest.raises(ValidationError, match=r"'a' is float64, the model wants float32.*astype"):
        load_inputs_npz(tmp_path / "dtype.npz", specs)
    np.savez(tmp_path / "shape.npz", a=good["a"].T, b=good["b"])
    with pytest.raises(ValidationError, match="'a' has shape 3x2, the model wants 2x3"):
        load_inputs_npz(tmp_path / "shape.npz", specs)
    with pytest.raises(ValidationError, match="does not exist"):
        load_inputs_npz(tmp_path / "none.npz", specs)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValidationError, match="not a readable .npz"):
        load_inputs_npz(tmp_path / "junk.npz", specs)


def test_symbolic_dimensions_accept_any_size(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros((2, 3), np.float32), b=np.ones((5, 3), np.float32))
    assert load_inputs_npz(tmp_path / "x.npz", _add_model())["b"].shape == (5, 3)
    assert [s.shape for s in input_specs(_add_model())] == [(2, 3), (None, 3)]


def test_reference_outputs_fixes_a_too_new_ir_version():
    model = _add_model(ir_version=14)  # what onnx 1.23 writes, and onnxruntime refuses
    a, b = np.full((2, 3), 1.25, np.float32), np.full((2, 3), 2.0, np.float32)
    outputs = reference_outputs(model, {"a": a, "b": b})
    np.testing.assert_array_equal(outputs["sum"], a + b)
    assert outputs["count"].dtype == np.int64 and outputs["count"].tolist() == [[3] * 3] * 2


def test_reference_outputs_errors():
    with pytest.raises(ModelError, match="does not exist"):
        reference_outputs("/nonexistent/model.onnx", {})
    with pytest.raises(ValidationError, match="missing b"):
        reference_outputs(_add_model(9), {"a": np.zeros((2, 3), np.float32)})


def test_compare_passes_fails_and_reports():
    expected = {"y": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "k": np.arange(4)}
    report = compare({"y": expected["y"] * (1 + 2e-5), "k": np.arange(4)}, expected)
    assert report.passed and report.max_abs_err > 0
    assert report.summary().keys() == {"passed", "max_abs_err", "max_rel_err", "max_ratio", "reference"}
    assert report.summary()["max_ratio"] is None   # no float64 reference given: the fixed tolerance judged
    text = str(report)
    assert "PASSED: 2/2" in text and "3x4" in text and "cosine" in text

    wrong = dict(expected, y=expected["y"] + 1e-3)
    failed = compare(wrong, expected)
    assert not failed.passed and "FAILED: 1/2" in str(failed)
    assert failed.outputs[0].max_abs_err == pytest.approx(1e-3, rel=1e-3)
    assert not compare({"y": expected["y"], "k": np.array([0, 1, 2, 4])}, expected).passed  # ints exact


def test_compare_structural_mismatches():
    expected = {"y": np.ones((2, 2), np.float32), "z": np.ones(3, np.float32)}
    report = compare({"y": np.ones((4,), np.float32)}, expected)
    notes = {o.name: o.note for o in report.outputs}
    assert notes == {"y": "shape 4", "z": "missing"} and not report.passed
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["max_abs_err"] is None
    nan = np.array([1.0, np.nan], np.float32)
    assert compare({"n": nan}, {"n": nan}).passed
    assert "NaN mismatch" in compare({"n": np.array([1.0, 2.0], np.float32)}, {"n": nan}).outputs[0].note
    with pytest.raises(ValidationError, match="unknown precision 'int3'"):
        compare({}, {}, precision="int3")


def test_fp16_tolerance_scales_with_the_output_range():
    expected = {"y": np.linspace(-50, 50, 101, dtype=np.float32)}
    noisy = {"y": expected["y"] + 0.2}  # 0.2% of the range: ordinary for an fp16 datapath
    assert not compare(noisy, expected, "fp32").passed
    assert compare(noisy, expected, "fp16").passed
    assert not compare({"y": -expected["y"]}, expected, "fp16").passed  # cosine -1
    assert TOLERANCES["fp32"].rtol == 1e-4 and TOLERANCES["fp32"].atol == 1e-5


def test_validate_end_to_end_with_the_kernel_runner():
    from hetc.sim.kernels.graph_runner import run_graph

    path = MODELS_DIR / "tiny_cnn.onnx"
    graph = load_onnx(path)
    inputs = make_inputs(graph)
    report = validate(path, run_graph(graph, inputs, "npu"), inputs)
    assert report.passed and report.max_abs_err < 1e-4
    assert report.to_dict()["outputs"][0]["name"] == graph.outputs[0].name
