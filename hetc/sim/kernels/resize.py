"""Resize with nearest (all four rounding modes) and N-linear interpolation, every coordinate transformation
mode, roi and extrapolation. Cubic interpolation and anti-aliased downscaling have no NPU/DSP kernel:
``resize_limitation`` says so, and those nodes must run on the CPU (onnxruntime)."""
from __future__ import annotations

import numpy as np

from hetc.sim.kernels.registry import KernelCall, kernel
from hetc.target.ops import resize_limitation


def _present(array: np.ndarray | None) -> np.ndarray | None:
    return array if array is not None and array.size else None


def _scales(call: KernelCall, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[np.ndarray, type]:
    """Per-axis scale factors as ONNX defines them (from ``scales``, or from ``sizes`` under the
    keep_aspect_ratio_policy; axes not listed in ``axes`` keep scale 1), and the float type onnxruntime
    computes source coordinates in: float32 from given scales, float64 from sizes (where 1 / (2/7) must
    come out as exactly 3.5)."""
    rank = len(in_shape)
    axes = [a + rank if a < 0 else a for a in (call.attr("axes") or range(rank))]
    given = _present(call.input(1) if call.opset < 11 else call.input(2))
    if given is not None:
        result = np.ones(rank, dtype=np.float32)
        result[axes] = given.astype(np.float32)
        return result, np.float32
    sizes = _present(call.input(3))
    ratios = np.asarray(sizes if sizes is not None else [out_shape[a] for a in axes], dtype=np.float64)
    ratios = ratios / np.asarray([in_shape[a] for a in axes], dtype=np.float64)
    policy = call.attr("keep_aspect_ratio_policy", "stretch")
    if policy == "not_larger":
        ratios[:] = ratios.min()
    elif policy == "not_smaller":
        ratios[:] = ratios.max()
    result = np.ones(rank, dtype=np.float64)
    result[axes] = ratios
    return result, np.float64


def _source_coordinates(mode: str, out_len: int, in_len: int, scale: float, roi: tuple[float, float],
                        dtype: type = np.float32) -> np.ndarray:
    """The input coordinate each output position maps to along one axis, computed in ``dtype`` as
    onnxruntime does, so that coordinates landing next to a rounding boundary mostly round the same way
    (in float64, 1 / 0.4f would round the other way). Exact agreement is not guaranteed when out/in is not
    a dyadic fraction: see docs/kernels.md."""
    x = np.arange(out_len, dtype=dtype)
    scale = dtype(scale)
    in_len, out_len = dtype(in_len), dtype(out_len)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        offset = in_len / 2 * (1 - adjustment)
        return (offset + ((x.astype(np.float64) + 0.5) / scale - 0.5)).astype(np.float32)
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, end = np.float32(roi[0]), np.float32(roi[1])
        if out_len > 1:
            return start * (in_len - 1) + x * (end - start) * (in_len - 1) / (out_len - 1)
        return np.full_like(x, 0.5 * (start + end) * (in_len - 1))
    raise ValueError(mode)


def _nearest_index(coords: np.ndarray, nearest_mode: str, scale: float) -> np.ndarray:
    if nearest_mode == "round_prefer_floor":
        index = np.ceil(coords - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        index = np.floor(coords + 0.5)
    elif nearest_mode == "floor":
        index = np.floor(coords)
    elif nearest_mode == "ceil":
        index = np.ceil(coords)
    else:  # opset 10's rule: truncate when upsampling, ceil when downsampling
        index = np.ceil(coords) if scale < 1 else np.trunc(coords)
    return index.astype(np.int64)


@kernel("Resize")
def resize(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    mode = call.attr("mode", "nearest")
    limitation = resize_limitation(mode, bool(call.attr("antialias", 0)))
    if limitation:
        call.fail(limitation)
    legacy = call.opset < 11
    transform = "asymmetric" if legacy else call.attr("coordinate_transformation_mode", "half_pixel")
    nearest_mode = "legacy" if legacy else call.attr("nearest_mode", "round_prefer_floor")
    out_shape = call.output_shape
    scales, coordinate_type = _scales(call, x.shape, out_shape)
    rank = x.ndim
    roi_input = None if legacy else _present(call.input(1))
    roi = np.zeros(2 * rank) if roi_input is None else roi_input.astype(np.float64)
    if roi_input is not None and len(roi) != 2 * rank:  # roi lists only the resized axes
        axes = [a + rank if a < 0 else a for a in call.attr("axes")]
        full = np.concatenate([np.zeros(rank), np.ones(rank)])
        full[axes], full[[a + rank for a in axes]] = roi[:len(axes)], roi[len(axes):]
        roi = full
    y = x
    outside = np.zeros(out_shape, dtype=bool)
    for axis in range(rank):
        in_len, out_len = x.shape[axis], out_shape[axis]
        if in_len == out_len and scales[axis] == 1.0 and transform != "tf_crop_and_resize":
            continue
        coords = _source_coordinates(transform, out_len, in_len, scales[axis], (roi[axis], roi[axis + rank]),
                                     coordinate_type)
        if transform == "tf_crop_and_resize":
            off = (coords < 0) | (coords > in_len - 1)
            outside |= off.reshape((-1,) + (1,) * (rank - 1 - axis))
        if mode == "nearest":
            y = np.take(y, np.clip(_nearest_index(coords, nearest_mode, scales[axis]), 0, in_len - 1), axis=axis)
            continue
        low = np.floor(coords)
        weight = (coords - low).reshape((-1,) + (1,) * (rank - 1 - axis))
        low_index = np.clip(low.astype(np.int64), 0, in_len - 1)
        high_index = np.clip(low.astype(np.int64) + 1, 0, in_len - 1)
        y64 = y.astype(np.float64)
        y = np.take(y64, low_index, axis=axis) * (1 - weight) + np.take(y64, high_index, axis=axis) * weight
    if transform == "tf_crop_and_resize" and outside.any():
        y = np.where(outside, call.attr("extrapolation_value", 0.0), y)
    return np.asarray(y).astype(x.dtype)
