"""Pooling (max, average, global) and LRN over strided window views: no loop over pixels."""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hetc.sim.kernels._windows import (WindowGeometry, pad_spatial, separable_reduce, window_counts, window_geometry,
                                      windows)
from hetc.sim.kernels.registry import KernelCall, kernel


def _geometry(call: KernelCall, x: np.ndarray) -> WindowGeometry:
    auto_pad = call.attr("auto_pad", "NOTSET")
    strides = call.attr("strides") or ()
    if auto_pad.startswith("SAME") and any(s > k for s, k in zip(strides, call.attr("kernel_shape"))):
        # The padding comes out negative; onnxruntime's window placement there follows no rule we could
        # reproduce, so such nodes stay on the CPU rather than risk a silent mismatch.
        call.fail(f"auto_pad={auto_pad} with a stride larger than the kernel")
    return window_geometry(x.shape[2:], call.attr("kernel_shape"), call.attr("strides"), call.attr("dilations"),
                           call.attr("pads"), call.attr("auto_pad", "NOTSET"), bool(call.attr("ceil_mode", 0)),
                           pooling=True)


def _lowest(dtype: np.dtype) -> float | int:
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


@kernel("MaxPool")
def max_pool(call: KernelCall) -> list[np.ndarray]:
    x = call.required(0)
    rank = x.ndim - 2
    geometry = _geometry(call, x)
    if len(call.outputs) > 1:
        view = windows(pad_spatial(x, geometry, _lowest(x.dtype)), geometry)
        flat = view.reshape(view.shape[:2 + rank] + (-1,))
        return [flat.max(axis=-1), _argmax_indices(call, x, geometry, flat)]
    return [separable_reduce(x, geometry, np.maximum, _lowest(x.dtype))]


def _argmax_indices(call: KernelCall, x: np.ndarray, geometry: WindowGeometry, flat: np.ndarray) -> np.ndarray:
    """MaxPool's Indices output: the flat position of each maximum in the unpadded input (row-major, or
    column-major over the spatial axes with storage_order=1), counting batch and channel too."""
    rank = x.ndim - 2
    tap = np.unravel_index(flat.argmax(axis=-1), geometry.kernel)
    coords = []
    for axis in range(rank):
        out_pos = np.arange(geometry.out[axis]).reshape((-1,) + (1,) * (rank - 1 - axis))
        coords.append(out_pos * geometry.strides[axis] - geometry.pads_begin[axis]
                      + tap[axis] * geometry.dilations[axis])
    spatial = x.shape[2:]
    if call.attr("storage_order", 0) == 1:
        index = np.ravel_multi_index(tuple(reversed(coords)), tuple(reversed(spatial)), mode="clip")
    else:
        index = np.ravel_multi_index(tuple(coords), spatial, mode="clip")
    plane = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * rank) * math.prod(spatial)
    return (index + plane).astype(np.int64)


@kernel("AveragePool")
def average_pool(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    geometry = _geometry(call, x)
    # float32 inputs sum in float32 as onnxruntime does (a float64 pass costs three times as much); other
    # dtypes (integers, float64) sum in float64.
    wide = np.dtype(np.float32) if x.dtype == np.float32 else np.dtype(np.float64)
    sums = separable_reduce(x, geometry, np.add, 0, wide)
    # The divisor counts real elements, plus the declared padding with count_include_pad, but never the
    # extra padding ceil_mode adds (onnxruntime's convention).
    counts = window_counts(geometry, x.shape[2:], bool(call.attr("count_include_pad", 0))).astype(wide)
    sums /= counts
    return sums.astype(x.dtype, copy=False)


@kernel("GlobalAveragePool", "GlobalMaxPool")
def global_pool(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    axes = tuple(range(2, x.ndim))
    if call.op_type == "GlobalMaxPool":
        return x.max(axis=axes, keepdims=True)
    return x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)


@kernel("LRN")
def lrn(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    size = call.attr("size")
    alpha, beta, bias = call.attr("alpha", 1e-4), call.attr("beta", 0.75), call.attr("bias", 1.0)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = np.pad(x.astype(np.float64) ** 2, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    window_sums = sliding_window_view(squares, size, axis=1).sum(axis=-1)
    return (x / (bias + alpha / size * window_sums) ** beta).astype(x.dtype)
