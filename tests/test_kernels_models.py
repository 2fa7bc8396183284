"""Whole models through the NPU kernels (CPU for ops outside the kernel set), node by node with
``run_graph``, validated against onnxruntime on the original model: fp32 at the fp32 tolerance and the fp16
emulation at the fp16 one."""
from __future__ import annotations

import onnx
import pytest

from conftest import MODELS_DIR, light_model_path
from hetc.frontend import import_model, load_onnx
from hetc.sim.kernels.graph_runner import run_graph
from hetc.validate import make_inputs, validate
from hetc.validate.weights import randomize_weights

ZOO = ["tiny_cnn", "mobilenet_v2", "unet", "gpt_decoder", "moe"]
LIGHT = ["squeezenet", "inception_v1"]  # Conv, pooling, LRN, Concat, Dropout, Softmax on real models


def _check(path, precision: str) -> None:
    graph = load_onnx(path)
    inputs = make_inputs(graph, seed=1)
    report = validate(path, run_graph(graph, inputs, "npu", precision), inputs, precision)
    assert report.passed, str(report)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_fp32(name):
    _check(MODELS_DIR / f"{name}.onnx", "fp32")


@pytest.mark.parametrize("name", ["mobilenet_v2", "gpt_decoder"])
def test_zoo_model_fp16_emulation(name):
    _check(MODELS_DIR / f"{name}.onnx", "fp16")


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_fp32(name):
    # the light models' weights are all 0.02, so every logit ties; random weights make the check mean something
    model = randomize_weights(onnx.load(str(light_model_path(name))), seed=0)
    graph = import_model(model)
    inputs = make_inputs(graph, seed=1)
    report = validate(model, run_graph(graph, inputs, "npu", "fp32"), inputs, "fp32")
    assert report.passed, str(report)
