"""Normalisations and softmax. Statistics are accumulated in float64 (cheap here, and it keeps results
within float32 round-off of onnxruntime's)."""
from __future__ import annotations

import numpy as np

from hetc.sim.kernels.registry import KernelCall, kernel


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
    return ((x - mean) * factor + bias).astype(x.dtype)


@kernel("InstanceNormalization")
def instance_normalization(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    axes = tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = x64.var(axis=axes, keepdims=True)
    normalized = (x64 - mean) / np.sqrt(var + call.attr("epsilon", 1e-5))
    y = normalized * _per_channel(call.required(1), x) + _per_channel(call.required(2), x)
    return y.astype(x.dtype)


@kernel("LayerNormalization")
def layer_normalization(call: KernelCall) -> list[np.ndarray]:
    x = call.required(0)
    axis = call.attr("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    axes = tuple(range(axis, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(x64.var(axis=axes, keepdims=True) + call.attr("epsilon", 1e-5))
    y = (x64 - mean) * inv_std * call.required(1)
    bias = call.input(2)
    if bias is not None:
        y = y + bias
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
    shifted = work.astype(np.float64) - work.max(axis=axis, keepdims=True)
    if call.op_type == "LogSoftmax":
        y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    else:
        e = np.exp(shifted)
        y = e / e.sum(axis=axis, keepdims=True)
    return y.astype(x.dtype).reshape(x.shape)
