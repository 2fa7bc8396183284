"""Integer kernels: QuantizeLinear, DequantizeLinear, ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul.

The arithmetic is the NPU's (docs/kernels.md, "Integer kernels"): zero points are subtracted from the 8-bit
operands, the products are summed in an int32 accumulator (wrapping as a 32-bit register does), QLinearConv's
int32 bias is added to it, and the accumulator is requantised to the output's scale by one float32 multiplier
per output channel, ``M = x_scale * w_scale[m] / y_scale`` (float32 operations, in that order), rounded half
to even and saturated to the output type. That is onnxruntime's CPU rule, so integer outputs match it
bit for bit.

The sums are computed by float64 BLAS on the zero-point-shifted operands: each product is at most 255 x 255 <
2^16 and every partial sum is an integer far below 2^53, so float64 adds them exactly, in any order, and the
result is the integer the int32 MAC array accumulates (then wrapped to 32 bits).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from hetc.ir import np_dtype
from hetc.sim.kernels.conv import conv
from hetc.sim.kernels.registry import KernelCall, kernel

# Integer types the quantising kernels produce; float8/4-bit/2-bit targets belong to the CPU
# (hetc.target.ops.UNSUPPORTED_CAST_TARGETS, the same rule as Cast's).
_QUANTIZED_TYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32"})


def _axis_param(param: np.ndarray, rank: int, axis: int, length: int, block_size: int = 0) -> np.ndarray:
    """A scale or zero point broadcastable against a rank-``rank`` tensor: a scalar as is, a 1-D per-axis
    parameter along ``axis``, a blocked one repeated ``block_size`` times along ``axis`` (cut to ``length``)."""
    param = np.asarray(param)
    if param.size == 1 and not block_size:
        return param.reshape(())
    axis %= rank
    if block_size:
        return np.repeat(param, block_size, axis=axis).take(range(length), axis=axis)
    shape = [1] * rank
    shape[axis] = -1
    return param.reshape(shape)


def _saturate(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """int32 accumulators to ``dtype``: ``saturate(round_half_even(float32(acc) * multiplier) + zero_point)``,
    every step in float32 as onnxruntime's MlasRequantizeOutput does it."""
    scaled = acc.astype(np.float32) * multiplier.astype(np.float32)
    return _saturate(np.rint(scaled).astype(np.int64) + zero_point.astype(np.int64), dtype)


def output_multiplier(in_scale: np.ndarray, w_scale: np.ndarray, out_scale: np.ndarray) -> np.ndarray:
    """The requantisation multiplier per output channel: ``in_scale * w_scale / out_scale`` in float32."""
    f32 = np.float32
    return (np.asarray(in_scale, f32).reshape(()) * np.asarray(w_scale, f32)) / np.asarray(out_scale, f32).reshape(())


def _shifted(call: KernelCall, value: int, zero: int | None, axis: int = 0) -> np.ndarray:
    """Input ``value`` minus its zero point (input ``zero``; per-axis along ``axis`` when 1-D), as float64."""
    x = call.required(value)
    zp = call.input(zero) if zero is not None else None
    shifted = x.astype(np.float64)
    if zp is not None:
        shifted -= _axis_param(zp, x.ndim, axis, x.shape[axis]).astype(np.float64)
    return shifted


def _param_shaper(call: KernelCall, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Shapes QuantizeLinear/DequantizeLinear's scale and zero point against ``x`` (axis, block_size)."""
    if not x.ndim:
        return lambda p: np.asarray(p).reshape(())
    axis, block = int(call.attr("axis", 1)), int(call.attr("block_size", 0) or 0)
    return lambda p: _axis_param(p, x.ndim, axis, x.shape[axis % x.ndim], block)


def _wrap_int32(acc: np.ndarray) -> np.ndarray:
    """The exact integer sums as an int32 register holds them (two's complement wrap-around)."""
    return acc.astype(np.int64).astype(np.int32)


@kernel("QuantizeLinear")
def quantize_linear(call: KernelCall) -> np.ndarray:
    x, scale, zero = call.required(0), call.required(1), call.input(2)
    out_type = call.outputs[0][0]
    if out_type not in _QUANTIZED_TYPES:
        call.fail(f"quantizing to {out_type} (saturation and parsing rules; only integer types have kernels)")
    shaped = _param_shaper(call, x)
    # x / scale in x's float type (a division, as MlasQuantizeLinear does), rounded half to even.
    q = np.rint(x / shaped(scale).astype(x.dtype)).astype(np.int64)
    if zero is not None:
        q += shaped(zero).astype(np.int64)
    return _saturate(q, np_dtype(out_type))


@kernel("DequantizeLinear")
def dequantize_linear(call: KernelCall) -> np.ndarray:
    x, scale, zero = call.required(0), call.required(1), call.input(2)
    if x.dtype.kind not in "iu":
        call.fail(f"dequantizing {x.dtype} (saturation and parsing rules; only integer types have kernels)")
    shaped = _param_shaper(call, x)
    centred = x.astype(np.int64)
    if zero is not None:
        centred = centred - shaped(zero).astype(np.int64)
    return centred.astype(np.float32) * shaped(scale).astype(np.float32)


def _integer_conv(call: KernelCall, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """The exact int32 accumulators of a convolution of zero-point-shifted operands (float64 carriers)."""
    acc = conv(KernelCall("Conv", dict(call.attrs), [x, w, None], call.outputs, call.opset))
    if bias is not None:
        acc += bias.astype(np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))
    return _wrap_int32(acc)


@kernel("ConvInteger")
def conv_integer(call: KernelCall) -> np.ndarray:
    x = _shifted(call, 0, 2)
    w = _shifted(call, 1, 3, axis=0)
    return _integer_conv(call, x, w, None)


@kernel("QLinearConv")
def qlinear_conv(call: KernelCall) -> np.ndarray:
    x = _shifted(call, 0, 2)
    w = _shifted(call, 3, 5, axis=0)   # per output channel zero points (ONNX allows them; onnxruntime wants 0)
    acc = _integer_conv(call, x, w, call.input(8))
    multiplier = output_multiplier(call.required(1), call.required(4), call.required(6))
    per_channel = multiplier.reshape((1, -1) + (1,) * (acc.ndim - 2)) if multiplier.size > 1 else multiplier
    y_zero = call.input(7)
    y_zero = np.zeros((), np.int64) if y_zero is None else y_zero.reshape(())
    return requantize(acc, per_channel, y_zero, np_dtype(call.outputs[0][0]))


def _integer_matmul(call: KernelCall, a: int, a_zero: int, b: int, b_zero: int) -> np.ndarray:
    """The int32 accumulators of ``(A - a_zero) @ (B - b_zero)`` (input indices): A's zero point per row
    (its last-but-one axis) when 1-D, B's per column (its last axis)."""
    rows = -2 if call.required(a).ndim >= 2 else 0
    return _wrap_int32(np.matmul(_shifted(call, a, a_zero, axis=rows), _shifted(call, b, b_zero, axis=-1)))


@kernel("MatMulInteger")
def matmul_integer(call: KernelCall) -> np.ndarray:
    return _integer_matmul(call, 0, 2, 1, 3)


@kernel("QLinearMatMul")
def qlinear_matmul(call: KernelCall) -> np.ndarray:
    acc = _integer_matmul(call, 0, 2, 3, 5)
    multiplier = output_multiplier(call.required(1), call.required(4), call.required(6))
    y_zero = call.input(7)
    y_zero = np.zeros((), np.int64) if y_zero is None else y_zero.reshape(())
    return requantize(acc, multiplier.reshape(-1) if multiplier.size > 1 else multiplier.reshape(()), y_zero,
                      np_dtype(call.outputs[0][0]))
