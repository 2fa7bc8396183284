"""Normalisations and softmax. Statistics (sums, means, variances) accumulate in float64; the per-element
work stays in the input's precision, as onnxruntime's does (a float64 copy of a whole activation would cost
more than the kernel). A float16/bfloat16 model's Softmax rounds every step of its ONNX function body."""
from __future__ import annotations

import numpy as np

from hetc.ir import np_dtype
from hetc.sim.kernels.registry import KernelCall, kernel

_NARROW_FLOATS = ("float16", "bfloat16")


def _per_channel(param: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A (C,) parameter shaped to broadcast over (N, C, *spatial); the old spatial=0 form is (C, *spatial)."""
    if param.ndim == 1:
        return param.reshape((1, -1) + (1,) * (x.ndim - 2))
    return param[np.newaxis]


@kernel("BatchNormalization")
def batch_normalization(call: KernelCall) -> np.ndarray:
    if call.attr("training_mode", 0) or len(call.outputs) > 1:
        call.fail("training mode (batch statistics and running-mean outputs)")
    x = call.required(0)
    scale, bias, mean, var = (_per_channel(call.required(i), x) for i in range(1, 5))
    epsilon = call.attr("epsilon", 1e-5)
    factor = scale / np.sqrt(var.astype(np.float64) + epsilon)
    shift = bias - mean * factor
    return x * factor.astype(x.dtype) + shift.astype(x.dtype)


@kernel("InstanceNormalization")
def instance_normalization(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    centered, inv_std = _standardize(x, tuple(range(2, x.ndim)), call.attr("epsilon", 1e-5))
    scale, bias = _per_channel(call.required(1), x), _per_channel(call.required(2), x)
    return centered * (inv_std * scale).astype(x.dtype) + bias.astype(x.dtype)


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """``x - mean`` (in x's dtype) and ``1 / sqrt(var + epsilon)`` (float64) over ``axes``, keepdims."""
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    centered = x - mean.astype(x.dtype)
    var = np.square(centered).mean(axis=axes, keepdims=True, dtype=np.float64)
    return centered, 1.0 / np.sqrt(var + epsilon)


@kernel("LayerNormalization")
def layer_normalization(call: KernelCall) -> list[np.ndarray]:
    x = call.required(0)
    axis = call.attr("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    axes = tuple(range(axis, x.ndim))
    centered, inv_std = _standardize(x, axes, call.attr("epsilon", 1e-5))
    y = centered * inv_std.astype(x.dtype) * call.required(1)
    bias = call.input(2)
    if bias is not None:
        y = y + bias
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    return [y.astype(x.dtype), mean.astype(np.float32), inv_std.astype(np.float32)][:len(call.outputs)]


def _softmax_axis(call: KernelCall, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Before opset 13 Softmax flattened its input to 2-D at ``axis`` (default 1) and normalised the
    second dimension; from 13 it normalises one axis (default -1)."""
    if call.opset >= 13:
        axis = call.attr("axis", -1)
        return x, axis + x.ndim if axis < 0 else axis
    axis = call.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(rows, -1), 1


@kernel("Softmax", "LogSoftmax")
def softmax(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    work, axis = _softmax_axis(call, x)
    log = call.op_type == "LogSoftmax"
    if call.outputs[0][0] in _NARROW_FLOATS:
        return _softmax_by_steps(work, axis, log, np_dtype(call.outputs[0][0])).reshape(x.shape)
    return softmax_along(work, axis, log).reshape(x.shape)


def softmax_along(x: np.ndarray, axis: int, log: bool = False) -> np.ndarray:
    """(Log)softmax of a float32/64 ``x`` over ``axis``, its sums in float64 (also a router's first step:
    hetc.sim.kernels.select)."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=axis, keepdims=True, dtype=np.float64)
    y = shifted - np.log(total).astype(x.dtype) if log else e / total.astype(x.dtype)
    return y.astype(x.dtype, copy=False)


def _softmax_by_steps(x: np.ndarray, axis: int, log: bool, dtype: np.dtype) -> np.ndarray:
    """Softmax of a float16/bfloat16 model as ONNX defines it, by its function body (ReduceMax, Sub, Exp,
    ReduceSum, then Div, or Log and Sub), every step an op of type T that rounds to T; the sum accumulates
    in float32. Rounding only the final result (onnxruntime's way) lands one ulp away on some elements,
    which the float16 conformance cases reject. ``x`` holds T values widened to float32."""
    def rounded(value: np.ndarray) -> np.ndarray:
        return value.astype(dtype).astype(np.float32)

    shifted = rounded(x - x.max(axis=axis, keepdims=True))
    e = rounded(np.exp(shifted))
    total = rounded(e.sum(axis=axis, keepdims=True, dtype=np.float32))
    return rounded(shifted - rounded(np.log(total))) if log else rounded(e / total)


@kernel("RMSNormalization")
def rms_normalization(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    axis = call.attr("axis", -1)
    axes = tuple(range(axis + x.ndim if axis < 0 else axis, x.ndim))
    mean_square = np.square(x, dtype=np.float64).mean(axis=axes, keepdims=True)
    inv_rms = 1.0 / np.sqrt(mean_square + call.attr("epsilon", 1e-5))
    return (x * inv_rms.astype(x.dtype) * call.required(1)).astype(x.dtype)
