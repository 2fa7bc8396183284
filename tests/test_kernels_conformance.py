"""The NPU/DSP kernels on ONNX's official per-operator conformance cases (every single-node case of a
kernel-set op), at each case's own tolerance as ONNX's backend runner uses."""
from __future__ import annotations

from collections import Counter

import pytest

from hetc.ir.fused import HETC_COMPOSITES
from hetc.sim.kernels import KERNEL_OPS
from hetc.sim.kernels.conformance import CaseResult, kernel_cases, run_all, run_case

# Reasons a kernel may refuse a case (the node then belongs on the CPU); anything else is a bug.
DOCUMENTED_REFUSALS = ("mode 'cubic'", "antialias=1", "training mode", "training_mode", "saturation and parsing",
                       "non-tensor input", "Attention with", "Attention in float16", "Attention in bfloat16")
# Cases where ONNX's expected output and onnxruntime disagree; hetc follows onnxruntime.
KNOWN_ONNXRUNTIME_DIVERGENCES = {"test_resize_downsample_scales_linear_align_corners"}


@pytest.fixture(scope="module")
def results() -> list[CaseResult]:
    return run_all("npu")


def test_no_case_fails(results):
    failures = [f"{r.name}: {r.detail}" for r in results if r.status == "fail"]
    assert not failures, "\n".join(failures)


def test_pass_count(results, capsys):
    counts = Counter(r.status for r in results)
    with capsys.disabled():
        print(f"\nNPU kernels on ONNX conformance cases: {dict(counts)} of {len(results)}")
    assert counts["pass"] >= 460


def test_refusals_are_documented_limitations(results):
    unexplained = [f"{r.name}: {r.detail}" for r in results
                   if r.status == "unsupported" and not any(reason in r.detail for reason in DOCUMENTED_REFUSALS)]
    assert not unexplained, "\n".join(unexplained)


def test_divergences_from_onnx_are_the_known_onnxruntime_ones(results):
    assert {r.name for r in results if r.status == "ort"} <= KNOWN_ONNXRUNTIME_DIVERGENCES


def test_every_kernel_op_with_cases_passes_some(results):
    with_cases = {r.op_type for r in results}
    passing = {r.op_type for r in results if r.status == "pass"}
    assert with_cases - passing == set()
    assert with_cases == KERNEL_OPS - HETC_COMPOSITES  # every kernel op of ONNX's has official cases


def test_dsp_runs_the_same_kernels():
    cases = {c.name: c for c in kernel_cases()}
    for name in ("test_conv_with_strides_padding", "test_maxpool_2d_ceil", "test_softmax_axis_0",
                 "test_resize_upsample_scales_nearest"):
        assert run_case(cases[name], "dsp").status == "pass", name
