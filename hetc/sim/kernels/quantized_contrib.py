"""onnxruntime's contrib integer ops that its quantizer writes in QOperator format around the standard ones:
com.microsoft QLinearAdd, QLinearGlobalAveragePool and QGemm, computed as onnxruntime computes them on x86
(docs/kernels.md, "Integer kernels")."""
from __future__ import annotations

import numpy as np

from hetc.ir import np_dtype
from hetc.sim.kernels.quantized import _axis_param, _saturate, _wrap_int32, requantize
from hetc.sim.kernels.registry import KernelCall, kernel

_F32 = np.float32


def _zero(call: KernelCall, index: int) -> np.ndarray:
    value = call.input(index)
    return np.zeros((), np.int64) if value is None else value.astype(np.int64).reshape(())


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add, one rounding: the float64 product of an integer below 2^9 and a float32 is
    exact, and so is its float64 sum with a float32 of similar magnitude, so rounding that sum once to
    float32 is the FMA's result."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(_F32)


def _scalar_along_rows(x: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether onnxruntime's broadcasting feeds ``x`` to the add kernel as a scalar per output run: a single
    value, or one value per run of the output's innermost axis."""
    return x.size == 1 or (bool(shape) and shape[-1] > 1 and (x.ndim == 0 or x.shape[-1] == 1))


@kernel("QLinearAdd")
def qlinear_add(call: KernelCall) -> np.ndarray:
    """C = saturate(round_half_even(rA (a - za) + rB (b - zb)) + zc), rA = sA / sC and rB = sB / sC in float32,
    evaluated as onnxruntime's AVX2 kernel does: fixed = zc - (rA za + rB zb), then FMA(b, rB, fixed) and
    FMA(a, rA, that); an operand broadcast along the innermost axis is folded into ``fixed`` first
    (product and sum rounded separately)."""
    a, b = call.required(0), call.required(3)
    r_a = _F32(call.required(1).reshape(())) / _F32(call.required(6).reshape(()))
    r_b = _F32(call.required(4).reshape(())) / _F32(call.required(6).reshape(()))
    za, zb, zc = _zero(call, 2), _zero(call, 5), _zero(call, 7)
    fixed = _F32(zc) - (_F32(r_a * _F32(za)) + _F32(r_b * _F32(zb)))
    shape = tuple(np.broadcast_shapes(a.shape, b.shape))
    fa, fb = a.astype(_F32), b.astype(_F32)
    if _scalar_along_rows(a, shape) and not _scalar_along_rows(b, shape):
        result = _fma32(fb, r_b, fixed + (fa * r_a).astype(_F32))
    elif _scalar_along_rows(b, shape) and not _scalar_along_rows(a, shape):
        result = _fma32(fa, r_a, fixed + (fb * r_b).astype(_F32))
    else:
        result = _fma32(fa, r_a, _fma32(fb, r_b, np.broadcast_to(fixed, shape)))
    return _saturate(np.rint(np.broadcast_to(result, shape)).astype(np.int64), np_dtype(call.outputs[0][0]))


@kernel("QLinearGlobalAveragePool")
def qlinear_global_average_pool(call: KernelCall) -> np.ndarray:
    """The int32 sum of each channel's image less zero point x image size, requantised by
    ``x_scale / (y_scale * image_size)`` (float32)."""
    x = call.required(0)
    if call.attr("channels_last", 0):
        call.fail("channels_last = 1 (NHWC layout)")
    image = int(np.prod(x.shape[2:]))
    acc = x.reshape(x.shape[:2] + (-1,)).astype(np.int64).sum(axis=-1) - _zero(call, 2) * image
    scale = _F32(call.required(1).reshape(())) / (_F32(call.required(3).reshape(())) * _F32(image))
    y = requantize(_wrap_int32(acc), np.asarray(scale), _zero(call, 4), np_dtype(call.outputs[0][0]))
    return y.reshape(x.shape[:2] + (1,) * (x.ndim - 2))


@kernel("QGemm")
def qgemm(call: KernelCall) -> np.ndarray:
    """``(A - za)' (B - zb)' + C`` in int32 (B's zero point per column), then requantised by
    ``alpha * a_scale * b_scale[n] / y_scale`` when y's zero point is given, else scaled to float32."""
    a, b = call.required(0), call.required(3)
    if call.attr("transA", 0):
        a = a.T
    if call.attr("transB", 0):
        b = b.T
    shifted_a = a.astype(np.float64) - _zero(call, 2)
    b_zero = call.required(5)
    shifted_b = b.astype(np.float64) - _axis_param(b_zero, 2, 1, b.shape[1]).astype(np.float64)
    acc = np.matmul(shifted_a, shifted_b)
    if call.input(6) is not None:
        acc += call.input(6).astype(np.float64)
    acc = _wrap_int32(acc)
    scale = _F32(_F32(call.attr("alpha", 1.0)) * _F32(call.required(1).reshape(()))) * \
        call.required(4).astype(_F32).reshape(-1)
    if call.input(7) is not None:
        scale = scale / _F32(call.input(7).reshape(()))
    scale = scale if scale.size > 1 else scale.reshape(())
    if call.input(8) is None:
        return acc.astype(_F32) * scale
    return requantize(acc, scale, _zero(call, 8), np_dtype(call.outputs[0][0]))
