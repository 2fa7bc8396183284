"""Exact numpy implementations of the ops that dominate constant subgraphs (weight generation, shape
arithmetic, parameter reshaping). They exist for speed: a single-node onnxruntime session costs ~1 ms to
build, and DenseNet alone folds over a thousand such nodes. Anything not here, or any case a kernel
declines (returns None), is evaluated by onnxruntime instead, so these only need to cover the easy cases
exactly, never every corner of the spec.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from hetc.ir import Node, np_dtype
from hetc.ir.dtypes import dtype_from_onnx

Arrays = list[np.ndarray | None]
Kernel = Callable[[Node, Arrays, int], "list[np.ndarray] | None"]


def _constant(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    if "value" in node.attrs and isinstance(node.attrs["value"], np.ndarray):
        return [node.attrs["value"]]
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in node.attrs:
            return [np.array(node.attrs[key], dtype=dtype)]
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in node.attrs:
            return [np.array(node.attrs[key], dtype=dtype)]
    return None  # sparse or string constants: let onnxruntime decode them


def _constant_of_shape(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    fill = node.attrs.get("value")
    fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill)
    shape = tuple(int(d) for d in np.asarray(inputs[0]).reshape(-1))
    # A read-only broadcast view: weights built this way (VGG-19's are 548 MB) cost no memory or time
    # until someone really needs their bytes.
    return [np.broadcast_to(fill.reshape(-1)[:1].reshape(()), shape)]


def _unsqueeze(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    axes = inputs[1] if opset >= 13 else node.attrs.get("axes")
    if axes is None:
        return None
    data = inputs[0]
    rank = data.ndim + len(np.asarray(axes).reshape(-1))
    out = data
    for axis in sorted(int(a) % rank for a in np.asarray(axes).reshape(-1)):
        out = np.expand_dims(out, axis)
    return [out]


def _squeeze(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    axes = (inputs[1] if len(inputs) > 1 else None) if opset >= 13 else node.attrs.get("axes")
    data = inputs[0]
    if axes is None:
        return [np.squeeze(data)]
    return [np.squeeze(data, axis=tuple(int(a) % data.ndim for a in np.asarray(axes).reshape(-1)))]


def _reshape(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    data, target = inputs[0], [int(d) for d in np.asarray(inputs[1]).reshape(-1)]
    if node.attrs.get("allowzero", 0) == 0:
        target = [data.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [data.reshape(target)]


def _concat(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    return [np.concatenate([a for a in inputs if a is not None], axis=node.attrs["axis"])]


def _gather(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    data, indices = inputs[0], np.asarray(inputs[1])
    axis = node.attrs.get("axis", 0)
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    return [np.take(data, indices, axis=axis)]


def _cast(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    to = dtype_from_onnx(node.attrs["to"])
    data = inputs[0]
    # Float-to-int casts, string casts and exotic types have rounding/saturation rules: leave them to ORT.
    if to == "string" or data.dtype == object or np_dtype(to).kind not in "fiub":
        return None
    if data.dtype.kind == "f" and np_dtype(to).kind in "iub":
        return None
    return [data.astype(np_dtype(to))]


def _transpose(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    return [np.transpose(inputs[0], node.attrs.get("perm"))]


def _flatten(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    data = inputs[0]
    axis = node.attrs.get("axis", 1) % (data.ndim + 1) if data.ndim else 0
    return [data.reshape(int(np.prod(data.shape[:axis])), -1)]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], floats_only: bool = False) -> Kernel:
    def kernel(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
        a, b = inputs[0], inputs[1]
        if a.dtype != b.dtype or (floats_only and a.dtype.kind != "f"):
            return None  # integer division and overflow rules differ from numpy's
        return [np.asarray(fn(a, b)).astype(a.dtype, copy=False)]
    return kernel


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Kernel:
    def kernel(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
        if inputs[0].dtype.kind != "f":
            return None
        return [np.asarray(fn(inputs[0])).astype(inputs[0].dtype, copy=False)]
    return kernel


def _identity(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    return [inputs[0]]


def _compare(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Kernel:
    def kernel(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
        if inputs[0].dtype != inputs[1].dtype:
            return None
        return [np.asarray(fn(inputs[0], inputs[1]), dtype=bool)]
    return kernel


KERNELS: dict[str, Kernel] = {
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Concat": _concat,
    "Gather": _gather,
    "Cast": _cast,
    "Transpose": _transpose,
    "Flatten": _flatten,
    "Identity": _identity,
    "Add": _binary(np.add, floats_only=True),
    "Sub": _binary(np.subtract, floats_only=True),
    "Mul": _binary(np.multiply, floats_only=True),
    "Div": _binary(np.divide, floats_only=True),
    "Sqrt": _unary(np.sqrt),
    "Neg": _unary(np.negative),
    "Reciprocal": _unary(np.reciprocal),
    "Equal": _compare(np.equal),
    "Less": _compare(np.less),
    "Greater": _compare(np.greater),
}


def run_numpy_kernel(node: Node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    """The outputs of ``node`` on constant ``inputs``, or None when no exact numpy kernel applies."""
    kernel = KERNELS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if kernel is None or any(a is not None and a.dtype == object for a in inputs):
        return None
    if node.op_type not in ("Constant", "Concat") and (not inputs or inputs[0] is None):
        return None
    try:
        return kernel(node, inputs, opset)
    except (ValueError, IndexError, TypeError, KeyError):
        return None  # malformed for numpy: onnxruntime gives the authoritative answer (or error)
