"""Data-movement kernels: Concat, Split, Slice, Transpose, Reshape, Flatten, Squeeze, Unsqueeze, Identity,
Gather, Pad. Integer parameters come as attributes in old opsets and as inputs in newer ones."""
from __future__ import annotations

import math

import numpy as np

from hetc.sim.kernels.registry import KernelCall, kernel


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


@kernel("Concat")
def concat(call: KernelCall) -> np.ndarray:
    parts = [x for x in call.inputs if x is not None]
    return np.concatenate(parts, axis=_axis(call.attr("axis", 1), parts[0].ndim),  # 1: opset<4 default
                          out=call.into(0, *parts))


@kernel("Split")
def split(call: KernelCall) -> list[np.ndarray]:
    x = call.required(0)
    axis = _axis(call.attr("axis", 0), x.ndim)
    sizes = call.ints_from("split", 1)
    if not sizes:
        # Equal parts; from opset 18 the last one may be smaller (ceil-sized chunks).
        parts = call.attr("num_outputs", len(call.outputs))
        chunk = -(-x.shape[axis] // parts)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(parts)]
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _slice_bounds(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX's clamping of one axis' (start, end, step); an end before index 0 becomes None for Python."""
    if step == 0:
        raise ValueError("Slice step 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@kernel("Slice")
def slice_(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    starts, ends = call.ints_from("starts", 1), call.ints_from("ends", 2)
    axes = call.ints_from("axes", 3) or list(range(len(starts)))
    steps = call.ints_from("steps", 4) or [1] * len(starts)
    picks = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.ndim)
        picks[axis] = _slice_bounds(start, end, step, x.shape[axis])
    return x[tuple(picks)]


@kernel("Transpose")
def transpose(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    perm = call.attr("perm")
    return np.transpose(x, perm if perm else None)


@kernel("Reshape")
def reshape(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    shape = call.ints_from("shape", 1)
    if not call.attr("allowzero", 0):  # 0 copies the input's dimension unless allowzero
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@kernel("Flatten")
def flatten(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    axis = _axis(call.attr("axis", 1), x.ndim)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@kernel("Squeeze")
def squeeze(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    axes = call.ints_from("axes", 1)
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(_axis(a, x.ndim) for a in axes))


@kernel("Unsqueeze")
def unsqueeze(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    axes = call.ints_from("axes", 1)
    rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(_axis(a, rank) for a in axes)))


@kernel("Identity")
def identity(call: KernelCall) -> np.ndarray:
    return call.required(0)


@kernel("Gather")
def gather(call: KernelCall) -> np.ndarray:
    x, indices = call.required(0), call.required(1).astype(np.int64)
    axis = _axis(call.attr("axis", 0), x.ndim)
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    return np.take(x, indices, axis=axis)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@kernel("Pad")
def pad(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    mode = call.attr("mode", "constant")
    if mode not in _PAD_MODES:
        call.fail(f"mode '{mode}'")
    if call.opset < 11:
        pads, value = list(call.attr("pads") or call.attr("paddings")), call.attr("value", 0.0)
    else:
        pads = call.ints_from("pads", 1)
        constant = call.input(2)
        value = constant.reshape(-1)[0] if constant is not None and constant.size else 0
    axes = call.ints_from("axes", 3) or list(range(x.ndim))
    widths = [[0, 0] for _ in range(x.ndim)]
    for i, axis in enumerate(axes):
        widths[_axis(axis, x.ndim)] = [pads[i], pads[i + len(axes)]]
    # Negative pads crop; numpy only pads, so crop first.
    crop = tuple(slice(max(0, -b), x.shape[a] - max(0, -e)) for a, (b, e) in enumerate(widths))
    x = x[crop]
    widths = [(max(0, b), max(0, e)) for b, e in widths]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(value, dtype=x.dtype))
    return np.pad(x, widths, mode=_PAD_MODES[mode])
