"""Selection kernels: TopK and OneHot, what a mixture of experts' router runs (hetc.passes.predication), and
the router fused whole, TopKGate (hetc.passes.router).

TopK keeps ONNX's order exactly: by value (largest or smallest first), equal values by ascending index; a
stable sort of the keys gives it. OneHot maps each index in [-depth, depth) to its one-hot row (negative
indices count from the end) and any other index to a row of the off value.
"""
from __future__ import annotations

import numpy as np

from hetc.sim.kernels.norm import softmax_along
from hetc.sim.kernels.registry import KernelCall, kernel


@kernel("TopK")
def topk(call: KernelCall) -> list[np.ndarray]:
    x = call.required(0)
    k = int(np.asarray(call.required(1)).reshape(-1)[0]) if len(call.inputs) > 1 else int(call.attr("k"))
    axis = call.attr("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    indices = top_indices(x, k, axis, bool(call.attr("largest", 1)))
    return [np.take_along_axis(x, indices, axis=axis), indices]


def top_indices(x: np.ndarray, k: int, axis: int, largest: bool = True) -> np.ndarray:
    """The int64 indices of the ``k`` largest (or smallest) elements along ``axis`` in TopK's order."""
    keys = x.astype(np.float64) if x.dtype.kind in "iub" else x
    # stable: equal keys keep ascending indices (negating floats keeps NaN last either way; ONNX leaves it open)
    order = np.argsort(-keys if largest else keys, axis=axis, kind="stable")
    return np.take(order, np.arange(k), axis=axis).astype(np.int64)


@kernel("OneHot")
def one_hot(call: KernelCall) -> np.ndarray:
    indices = np.asarray(call.required(0))
    depth = int(np.asarray(call.required(1)).reshape(-1)[0])
    off, on = np.asarray(call.required(2)).reshape(-1)[:2]
    index = indices.astype(np.int64)
    index = np.where(index < 0, index + depth, index)
    hot = index[..., None] == np.arange(depth)   # out-of-range indices match nothing: a row of off values
    axis = call.attr("axis", -1)
    axis = axis + indices.ndim + 1 if axis < 0 else axis
    return np.moveaxis(np.where(hot, on, off).astype(off.dtype), -1, axis)


@kernel("TopKGate")
def topk_gate(call: KernelCall) -> np.ndarray:
    """Softmax over the last axis, each row's top ``k`` kept (ties to the lower index, as TopK), renormalised:
    the ops hetc.passes.router fused, in their order; with a second input the logits are ``x @ W`` first."""
    logits = call.required(0)
    if call.input(1) is not None:
        logits = np.matmul(logits, call.required(1))   # the router's projection (MatMul's kernel: linalg)
    probs = softmax_along(logits, logits.ndim - 1)
    mask = np.zeros_like(probs)
    np.put_along_axis(mask, top_indices(probs, int(call.attr("k")), logits.ndim - 1), 1, axis=-1)
    gated = probs * mask
    return (gated / gated.sum(axis=-1, keepdims=True)).astype(logits.dtype)
