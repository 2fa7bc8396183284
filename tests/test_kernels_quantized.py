"""The integer NPU/DSP kernels against onnxruntime on seeded random data: integer outputs must be identical.

Scales come from calibrating seeded float data with fan-in-scaled weights (what a quantizer would pick), so the
requantised values land everywhere in the output range, rounding ties and saturation included."""
from __future__ import annotations

import numpy as np
import pytest

from hetc.ir import dtype_from_numpy
from hetc.sim.kernels import run_kernel, run_on_cpu
from hetc.sim.kernels.quantized import output_multiplier, requantize

OPSET = {"": 21}


def _both(op: str, attrs: dict, inputs: list, device: str = "npu") -> tuple[list, list]:
    expected = run_on_cpu(op, "", attrs, inputs, [("float32", ())], OPSET)
    declared = [(dtype_from_numpy(e.dtype), e.shape) for e in expected]
    return run_kernel(device, op, "", attrs, inputs, declared, OPSET), expected


def assert_identical(op: str, attrs: dict, inputs: list, device: str = "npu") -> None:
    actual, expected = _both(op, attrs, inputs, device)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def _quantize(x: np.ndarray, dtype: type, axis: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero point) of ``x`` by min/max calibration: asymmetric for uint8, symmetric for int8;
    per channel along ``axis`` when given."""
    reduce_axes = None if axis is None else tuple(i for i in range(x.ndim) if i != axis)
    lo = np.minimum(x.min(axis=reduce_axes), 0).astype(np.float32)
    hi = np.maximum(x.max(axis=reduce_axes), 0).astype(np.float32)
    info = np.iinfo(dtype)
    if dtype == np.int8:
        scale = (np.maximum(-lo, hi) / 127).astype(np.float32)
        zero = np.zeros_like(scale, dtype=dtype)
    else:
        scale = ((hi - lo) / (info.max - info.min)).astype(np.float32)
        zero = np.clip(np.rint(info.min - lo / scale), info.min, info.max).astype(dtype)
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.rint(x / scale.reshape(shape)) + zero.reshape(shape), info.min, info.max).astype(dtype)
    return q, np.asarray(scale, np.float32), np.asarray(zero)


def _conv_case(rng: np.random.Generator, act: type, per_channel: bool, groups: int, cin: int, cout: int,
               kernel: int, stride: int, size: int = 9):
    x = rng.standard_normal((1, cin, size, size)).astype(np.float32)
    w = (rng.standard_normal((cout, cin // groups, kernel, kernel)) / np.sqrt(cin // groups * kernel ** 2)
         ).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) * 0.1
    xq, xs, xz = _quantize(x, act)
    wq, ws, wz = _quantize(w, np.int8, axis=0 if per_channel else None)
    # The float convolution's range sets the output scale, as calibration would.
    y = run_on_cpu("Conv", "", {"group": groups, "strides": [stride] * 2, "pads": [kernel // 2] * 4},
                   [x, w, b], [("float32", ())], {"": 17})[0]
    _, ys, yz = _quantize(y, act)
    bq = np.rint(b / (xs * ws)).astype(np.int32)
    attrs = {"group": groups, "strides": [stride] * 2, "pads": [kernel // 2] * 4}
    return attrs, xq, xs, xz, wq, ws, wz, ys, yz, bq


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("act", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shape", [(1, 16, 24, 3, 1), (1, 32, 32, 1, 1), (32, 32, 32, 3, 2), (1, 48, 8, 5, 1)])
def test_qlinear_conv_matches_onnxruntime_exactly(seed, act, per_channel, shape):
    groups, cin, cout, kernel, stride = shape
    rng = np.random.default_rng(seed)
    attrs, xq, xs, xz, wq, ws, wz, ys, yz, bq = _conv_case(rng, act, per_channel, groups, cin, cout, kernel, stride)
    assert_identical("QLinearConv", attrs, [xq, xs, xz, wq, ws, wz, ys, yz, bq])


@pytest.mark.parametrize("seed", range(3))
def test_conv_integer_matches_onnxruntime_exactly(seed):
    rng = np.random.default_rng(seed)
    attrs, xq, _xs, xz, wq, *_ = _conv_case(rng, np.uint8, False, 1, 24, 16, 3, 1)
    assert_identical("ConvInteger", attrs, [xq, wq, xz])
    assert_identical("ConvInteger", attrs, [xq, (wq.astype(np.int16) + 128).astype(np.uint8), xz, np.uint8(128)])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("act", [np.uint8, np.int8])
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("device", ["npu", "dsp"])
def test_qlinear_matmul_matches_onnxruntime_exactly(seed, act, per_column, device):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2, 7, 96)).astype(np.float32)
    b = (rng.standard_normal((96, 40)) / np.sqrt(96)).astype(np.float32)
    aq, as_, az = _quantize(a, act)
    bq, bs, bz = _quantize(b, np.int8, axis=1 if per_column else None)
    _, ys, yz = _quantize(a @ b, act)
    assert_identical("QLinearMatMul", {}, [aq, as_, az, bq, bs, bz, ys, yz], device)


@pytest.mark.parametrize("seed", range(3))
def test_matmul_integer_matches_onnxruntime_exactly(seed):
    rng = np.random.default_rng(seed)
    aq = rng.integers(0, 256, (5, 64), dtype=np.uint8)
    bq = rng.integers(-128, 128, (64, 33), dtype=np.int8)
    assert_identical("MatMulInteger", {}, [aq, bq, np.uint8(131), np.int8(-3)])
    assert_identical("MatMulInteger", {}, [aq, bq, np.uint8(7), rng.integers(-5, 5, 33, dtype=np.int8)], "dsp")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_quantize_and_dequantize_match_onnxruntime_exactly(seed, dtype):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, 8, 5, 5)) * 3).astype(np.float32)
    # Exact ties (k + 0.5 steps) must round half to even, and values past the range must saturate.
    x[0, 0, 0, :4] = np.array([0.5, 1.5, 2.5, -2.5], np.float32) * 0.125
    x[0, 0, 1, 0] = 1e6
    q, scale, zero = _quantize(x, dtype)
    scale = np.float32(0.125)
    assert_identical("QuantizeLinear", {}, [x, scale, zero])
    _, channel_scale, channel_zero = _quantize(x, dtype, axis=1)
    assert_identical("QuantizeLinear", {"axis": 1}, [x, channel_scale, channel_zero])
    assert_identical("DequantizeLinear", {}, [q, scale, zero])
    assert_identical("DequantizeLinear", {"axis": 1}, [q, channel_scale, channel_zero])


def test_accumulator_wraps_like_an_int32_register():
    acc = np.array([2 ** 31 - 1], np.int64) + 1
    from hetc.sim.kernels.quantized import _wrap_int32
    assert _wrap_int32(acc.astype(np.float64))[0] == -2 ** 31


def _fixed_point_requantize(acc: np.ndarray, multiplier: np.ndarray, zero: int, dtype: type) -> np.ndarray:
    """TFLite's integer-only requantisation (gemmlowp): the multiplier as a Q31 mantissa and a right shift,
    SaturatingRoundingDoublingHighMul (round half away from zero) then RoundingDivideByPOT (round half away
    from zero). The rule many fixed-point NPUs implement, for comparison with the float32 one."""
    mantissa, exponent = np.frexp(multiplier.astype(np.float64))
    q31 = np.rint(mantissa * 2 ** 31).astype(np.int64)
    exponent = exponent.astype(np.int64)
    overflow = q31 == 2 ** 31
    q31, exponent = np.where(overflow, 2 ** 30, q31), np.where(overflow, exponent + 1, exponent)
    product = acc.astype(np.int64) * q31
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = (product + nudge) // (1 << 31)
    high = np.where((product + nudge) < 0, -((-(product + nudge)) // (1 << 31)), high)  # truncate towards 0
    shift = -exponent
    mask = (np.int64(1) << shift) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    scaled = (high >> shift) + (remainder > threshold)
    info = np.iinfo(dtype)
    return np.clip(scaled + zero, info.min, info.max).astype(dtype)


def test_fixed_point_requantisation_differs_by_at_most_one_step():
    """The NPU requantises with onnxruntime's float32 multiplier (docs/kernels.md). A Q31 fixed-point rule
    would differ on a small share of elements, by one quantisation step, where the float32 product rounds
    across a .5 boundary differently: measured here on realistic accumulators."""
    rng = np.random.default_rng(0)
    acc = rng.integers(-40000, 40000, 200_000).astype(np.int32)
    multiplier = output_multiplier(np.float32(0.0213), rng.uniform(0.001, 0.01, 1).astype(np.float32),
                                   np.float32(0.047))
    ours = requantize(acc, multiplier, np.int64(3), np.dtype(np.int8)).astype(np.int64)
    fixed = _fixed_point_requantize(acc, multiplier, 3, np.int8).astype(np.int64)
    differ = np.abs(ours - fixed)
    assert differ.max() <= 1
    assert differ.sum() / acc.size < 0.01


@pytest.mark.parametrize("weight", [127, -128])
def test_extreme_operands_accumulate_without_16_bit_saturation(weight):
    """255 x 127 pairs overflow a 16-bit pairwise sum (x86's vpmaddubsw): onnxruntime and the NPU both
    accumulate them exactly in int32."""
    x = np.full((1, 16, 8, 8), 255, np.uint8)
    w = np.full((8, 16, 3, 3), weight, np.int8)
    args = [x, np.float32(1), np.uint8(0), w, np.float32(1), np.int8(0), np.float32(65536), np.uint8(128)]
    assert_identical("QLinearConv", {"pads": [1] * 4}, args)
    assert_identical("MatMulInteger", {}, [x.reshape(16, 64), w.reshape(8, 144)[:, :64].T.copy(), np.uint8(0)])
