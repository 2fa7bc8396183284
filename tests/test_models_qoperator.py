"""models/mobilenet_v2_qoperator.onnx: made by onnxruntime's quantizer reproducibly, and compiled by hetc with
every integer op on the accelerators and outputs identical to onnxruntime's."""
from __future__ import annotations

import sys

import onnx
import pytest

from conftest import MODELS_DIR, REPO
from hetc.api import validate
from hetc.target.ops import CONTRIB_DOMAIN, QUANTIZED_OPS

MODEL = MODELS_DIR / "mobilenet_v2_qoperator.onnx"


def test_the_committed_model_is_what_the_generator_makes():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import make_models
    finally:
        sys.path.pop(0)
    fresh = make_models.mobilenet_v2_qoperator().SerializeToString(deterministic=True)
    assert fresh == MODEL.read_bytes(), "re-run python tools/make_models.py and commit"
    model = onnx.load(str(MODEL))
    assert model.ir_version == 9
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), (CONTRIB_DOMAIN, 1)}
    ops = {node.op_type for node in model.graph.node}
    assert {"QLinearConv", "QLinearAdd", "QGemm"} <= ops and "Conv" not in ops


@pytest.mark.parametrize("target", ["edge-soc", "multi-npu"])
def test_integer_ops_run_on_the_accelerators_and_match_onnxruntime_exactly(target):
    result = validate(MODEL, target=target, scheduler="heft")
    assert result.validation is not None and result.validation.passed
    assert result.validation.max_abs_err == 0.0
    devices = {row["name"]: row["device"] for row in result.placement}
    on_cpu = [row["name"] for row in result.placement if row["op"] in QUANTIZED_OPS and row["device"] == "cpu"]
    # Only the input's QuantizeLinear may stay on the CPU (the float input arrives in DRAM there).
    assert on_cpu in ([], ["x_QuantizeLinear"])
    assert all(devices[n.name] != "cpu" for n in result.graph.nodes if n.op_type == "QLinearConv")
