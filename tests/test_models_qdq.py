"""The quantized (QDQ) models: made by onnxruntime's quantizer, reproducibly, with the quantisation they claim."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import MODELS_DIR
from qdq_helpers import make_models

QDQ_PATH = MODELS_DIR / "mobilenet_v2_qdq.onnx"


def _run(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    source = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _weight_dequantizers(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """(quantized weight, scale, zero point, axis) of every DequantizeLinear that reads a Conv/Gemm weight."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    readers = {name: node for node in model.graph.node for name in node.input[1:2]
               if node.op_type in ("Conv", "Gemm")}
    found = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] in readers and node.input[0] in consts:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            found.append((consts[node.input[0]], consts[node.input[1]], consts[node.input[2]], axis))
    return found


def test_qdq_mobilenet_is_valid_quantized_and_reproducible() -> None:
    model = onnx.load(str(QDQ_PATH))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 9
    weights = _weight_dequantizers(model)
    assert len(weights) == 35   # 34 convolutions and the classifier
    for quantized, scale, zero_point, axis in weights:
        assert quantized.dtype == np.int8 and not zero_point.any()       # symmetric int8
        assert scale.shape == (quantized.shape[axis],)                   # one scale per output channel
    activations = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("zero_point")
                   and t.data_type == onnx.TensorProto.INT8 and not t.dims]
    assert activations and any(a != 0 for a in activations), "activations are asymmetric int8"
    rebuilt = make_models().mobilenet_v2_qdq().SerializeToString(deterministic=True)
    assert rebuilt == QDQ_PATH.read_bytes(), "re-run python tools/make_models.py and commit"


def test_qdq_mobilenet_tracks_its_float_model() -> None:
    """Quantisation error, not a different network: the int8 logits follow the float ones."""
    x = np.random.default_rng(3).standard_normal((1, 3, 96, 96)).astype(np.float32)
    quantized = _run(str(QDQ_PATH), x)
    exact = _run(str(MODELS_DIR / "mobilenet_v2.onnx"), x)
    assert np.corrcoef(quantized.ravel(), exact.ravel())[0, 1] > 0.95


@pytest.mark.slow
def test_qdq_resnet50_on_demand(tmp_path) -> None:
    """Too big to commit: made into a cache directory, with int8 activations, and it follows its float model."""
    tools = make_models()
    path = tools.cached_model(tools.RESNET50_QDQ, tmp_path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert path.stat().st_size > 10 << 20
    assert all(q.dtype == np.int8 and s.size == q.shape[a] for q, s, _, a in _weight_dequantizers(model))
    assert any(t.data_type == onnx.TensorProto.INT8 and t.name.endswith("zero_point") and
               numpy_helper.to_array(t).any() for t in model.graph.initializer), "asymmetric int8 activations"
    x = np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)
    float_path = tools.cached_model("resnet50_float", tmp_path)
    assert np.corrcoef(_run(str(path), x).ravel(), _run(str(float_path), x).ravel())[0, 1] > 0.9
    assert tools.cached_model(tools.RESNET50_QDQ, tmp_path) == path   # made once
