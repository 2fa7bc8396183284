"""The NPU/DSP kernels of onnxruntime's contrib integer ops (com.microsoft QLinearAdd, QLinearGlobalAveragePool,
QGemm) against onnxruntime itself on seeded random data: identical outputs; and where capability lets them run."""
from __future__ import annotations

import numpy as np
import pytest

from hetc.ir import dtype_from_numpy
from hetc.sim.kernels import KernelError, run_kernel, run_on_cpu
from hetc.target import load_target
from hetc.target.ops import CONTRIB_DOMAIN
from target_helpers import node, val

OPSET = {"": 21, CONTRIB_DOMAIN: 1}


def _fma_host() -> bool:
    """onnxruntime's x86 QLinearAdd kernel (the one hetc follows) runs where the CPU has AVX2 and FMA."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


def assert_identical(op: str, attrs: dict, inputs: list, out_dtype: str, device: str = "npu") -> None:
    expected = run_on_cpu(op, CONTRIB_DOMAIN, attrs, inputs, [(out_dtype, ())], OPSET)
    declared = [(dtype_from_numpy(e.dtype), e.shape) for e in expected]
    actual = run_kernel(device, op, CONTRIB_DOMAIN, attrs, inputs, declared, OPSET)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def _scalar(value: float, dtype: type) -> np.ndarray:
    return np.array(value, dtype)


def _operands(rng: np.random.Generator, dtype: type, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape, dtype=dtype)
    centre = (info.min + info.max) // 2
    return x, _scalar(rng.uniform(0.01, 0.1), np.float32), _scalar(rng.integers(centre - 20, centre + 20), dtype)


@pytest.mark.skipif(not _fma_host(), reason="onnxruntime's QLinearAdd differs on hosts without AVX2/FMA")
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("b_shape", [(1, 16, 12, 12), (1, 16, 1, 1), (1,)])
def test_qlinear_add_matches_onnxruntime_exactly(seed, dtype, b_shape):
    rng = np.random.default_rng(seed)
    a, sa, za = _operands(rng, dtype, (1, 16, 12, 12))
    b, sb, zb = _operands(rng, dtype, b_shape)
    _, sc, zc = _operands(rng, dtype, ())
    name = dtype_from_numpy(np.dtype(dtype))
    assert_identical("QLinearAdd", {}, [a, sa, za, b, sb, zb, sc, zc], name)
    assert_identical("QLinearAdd", {}, [b, sb, zb, a, sa, za, sc, zc], name, "dsp")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_qlinear_global_average_pool_matches_onnxruntime_exactly(seed, dtype):
    rng = np.random.default_rng(seed)
    x, sx, zx = _operands(rng, dtype, (2, 24, 7, 7))
    _, sy, zy = _operands(rng, dtype, ())
    assert_identical("QLinearGlobalAveragePool", {}, [x, sx, zx, np.array(sy * 0.3, np.float32), zy], dtype_from_numpy(np.dtype(dtype)))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("per_column", [False, True])
def test_qgemm_matches_onnxruntime_exactly(seed, trans_b, per_column):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (3, 96), dtype=np.int8)
    b = rng.integers(-127, 128, (96, 20), dtype=np.int8)
    b_scale = rng.uniform(0.001, 0.01, 20 if per_column else ()).astype(np.float32)
    b_zero = np.zeros(b_scale.shape, np.int8)
    bias = rng.integers(-3000, 3000, 20).astype(np.int32)
    b = b.T.copy() if trans_b else b
    head = [a, _scalar(0.02, np.float32), _scalar(3, np.int8), b, b_scale, b_zero, bias]
    attrs = {"transB": trans_b, "alpha": 1.0}
    assert_identical("QGemm", attrs, head + [_scalar(0.05, np.float32), _scalar(-4, np.int8)], "int8")
    assert_identical("QGemm", attrs, head, "float32")   # no output scale: the int32 sums scaled to float32


def test_channels_last_pool_is_refused():
    x = np.zeros((1, 4, 4, 8), np.int8)
    with pytest.raises(KernelError, match="channels_last"):
        run_kernel("npu", "QLinearGlobalAveragePool", CONTRIB_DOMAIN, {"channels_last": 1},
                   [x, _scalar(0.1, np.float32), _scalar(0, np.int8), _scalar(0.1, np.float32), _scalar(0, np.int8)],
                   [("int8", (1, 1, 1, 8))], OPSET)


def test_capability_admits_the_contrib_kernels_the_preset_lists_and_refuses_others():
    soc = load_target("edge-soc")
    add = node("QLinearAdd", [val("a", (1, 16, 8, 8), "int8"), val("sa", (), "float32", True),
                              val("za", (), "int8", True), val("b", (1, 16, 8, 8), "int8"),
                              val("sb", (), "float32", True), val("zb", (), "int8", True),
                              val("sc", (), "float32", True), val("zc", (), "int8", True)],
               [val("c", (1, 16, 8, 8), "int8")], domain=CONTRIB_DOMAIN)
    assert soc.supports(add, "npu") and soc.supports(add, "dsp")
    mul = node("QLinearMul", add.inputs, add.outputs, domain=CONTRIB_DOMAIN)
    refusal = soc.supports(mul, "npu")
    assert not refusal and "com.microsoft::QLinearMul is a custom-domain op" in refusal.message
