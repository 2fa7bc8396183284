"""ReduceMean/Sum/Max/Min: axes as an attribute (old opsets) or an input (ReduceSum from 13, the rest from
18), keepdims, noop_with_empty_axes, and reductions over empty dimensions."""
from __future__ import annotations

import numpy as np

from hetc.sim.kernels.registry import KernelCall, kernel



def _empty_value(op_type: str, dtype: np.dtype) -> object:
    """The value of a reduction over no element (ONNX's empty-set cases): the operation's identity."""
    if op_type in ("ReduceSum", "ReduceMean"):
        return 0 if op_type == "ReduceSum" else np.nan
    lowest_first = op_type == "ReduceMax"
    if dtype == np.dtype(bool):
        return not lowest_first
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.min if lowest_first else info.max
    return -np.inf if lowest_first else np.inf


@kernel("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def reduce(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    axes = call.ints_from("axes", 1)
    keepdims = bool(call.attr("keepdims", 1))
    if not axes:
        if call.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.ndim))
    axes_tuple = tuple(sorted(a + x.ndim if a < 0 else a for a in axes))
    if any(x.shape[a] == 0 for a in axes_tuple):
        shape = tuple(1 if a in axes_tuple else d for a, d in enumerate(x.shape) if keepdims or a not in axes_tuple)
        return np.full(shape, _empty_value(call.op_type, x.dtype), dtype=np.float64 if x.dtype.kind == "f" else x.dtype)
    if call.op_type == "ReduceMax":
        return x.max(axis=axes_tuple, keepdims=keepdims)
    if call.op_type == "ReduceMin":
        return x.min(axis=axes_tuple, keepdims=keepdims)
    if call.op_type == "ReduceSum":
        return x.sum(axis=axes_tuple, keepdims=keepdims, dtype=np.float64 if x.dtype.kind == "f" else None)
    if x.dtype.kind in "iu":
        count = int(np.prod([x.shape[a] for a in axes_tuple]))
        total = x.sum(axis=axes_tuple, keepdims=keepdims)
        return np.trunc(total / count).astype(x.dtype)  # integer mean truncates, as in C
    return x.mean(axis=axes_tuple, keepdims=keepdims, dtype=np.float64)
