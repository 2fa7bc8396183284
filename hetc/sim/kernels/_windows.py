"""Sliding-window geometry shared by Conv and the pooling kernels: padding (explicit, auto_pad, ceil_mode),
output sizes, and the strided window view over a padded input that replaces per-pixel loops."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class WindowGeometry:
    """Per spatial axis: kernel size, stride, dilation, padding at each end and output size. ``pads_end``
    includes the extra padding ceil_mode needs so the last window fits; ``declared_end`` excludes it."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    declared_end: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))


def window_geometry(in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int] | None,
                    dilations: Sequence[int] | None, pads: Sequence[int] | None, auto_pad: str = "NOTSET",
                    ceil_mode: bool = False, pooling: bool = False) -> WindowGeometry:
    """The geometry ONNX (and onnxruntime) define for Conv (``pooling=False``) and MaxPool/AveragePool.

    With SAME_* auto padding, Conv pads so that ``out = ceil(in / stride)`` for the dilated kernel, while
    onnxruntime's pooling sizes the padding with the undilated kernel and then applies its usual output
    formula (ceil_mode included); both are reproduced."""
    rank = len(in_sizes)
    strides = tuple(strides or (1,) * rank)
    dilations = tuple(dilations or (1,) * rank)
    pads = tuple(pads or (0,) * (2 * rank))
    begins, ends, declared, outs = [], [], [], []
    for i, size in enumerate(in_sizes):
        eff = (kernel[i] - 1) * dilations[i] + 1
        same = auto_pad in ("SAME_UPPER", "SAME_LOWER")
        if same and not pooling:
            out = math.ceil(size / strides[i])
            total = max(0, (out - 1) * strides[i] + eff - size)
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            end = total - begin
        else:
            if auto_pad == "VALID":
                begin = end = 0
            elif same:  # onnxruntime's pooling: padding from the undilated kernel (negative when stride > kernel)
                total = (math.ceil(size / strides[i]) - 1) * strides[i] + kernel[i] - size
                begin = max(0, total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
                end = total - begin
            else:
                begin, end = pads[i], pads[i + rank]
            span = size + begin + end - eff
            if ceil_mode:
                out = -(-span // strides[i]) + 1
                if (out - 1) * strides[i] >= size + begin:  # the last window would start in the end padding
                    out -= 1
            else:
                out = span // strides[i] + 1
        needed = (out - 1) * strides[i] + eff  # padded length the windows actually cover
        begins.append(begin)
        declared.append(end)
        ends.append(max(0, end, needed - size - begin))
        outs.append(out)
    return WindowGeometry(tuple(kernel), strides, dilations, tuple(begins), tuple(ends), tuple(declared),
                          tuple(outs))


def pad_spatial(x: np.ndarray, geometry: WindowGeometry, value: float) -> np.ndarray:
    """``x`` (N, C, *spatial) padded with ``value`` as the geometry says (a no-op when nothing to pad)."""
    widths = [(0, 0), (0, 0)] + list(zip(geometry.pads_begin, geometry.pads_end))
    if not any(b or e for b, e in widths):
        return x
    return np.pad(x, widths, mode="constant", constant_values=value)


def windows(padded: np.ndarray, geometry: WindowGeometry) -> np.ndarray:
    """A read-only view (N, C, *out, *kernel) of every window of an already padded (N, C, *spatial) array."""
    rank = len(geometry.kernel)
    spatial_axes = tuple(range(2, 2 + rank))
    view = sliding_window_view(padded, geometry.effective_kernel, axis=spatial_axes)
    picks = [slice(None), slice(None)]
    picks += [slice(0, (o - 1) * s + 1, s) for o, s in zip(geometry.out, geometry.strides)]
    picks += [slice(None, None, d) for d in geometry.dilations]
    return view[tuple(picks)]


def taps(padded: np.ndarray, geometry: WindowGeometry) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """For each kernel tap, the strided view (N, C, *out) of the input elements it touches. Reducing over
    taps streams through memory once per tap instead of materialising every window (much faster for
    pooling and depthwise convolution, whose per-window work is tiny)."""
    for tap in itertools.product(*(range(k) for k in geometry.kernel)):
        picks = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                      for t, d, o, s in zip(tap, geometry.dilations, geometry.out, geometry.strides))
        yield tap, padded[(slice(None), slice(None)) + picks]


def tap_span(geometry: WindowGeometry, axis: int, tap: int, size: int) -> tuple[int, int, slice]:
    """For kernel tap ``tap`` on ``axis`` of an unpadded input of ``size`` elements: the output positions
    [lo, hi) whose input element lies inside the input (the others read padding), and the slice of the
    input they read. Lets kernels clip each tap's window to the input instead of padding a copy of it."""
    stride, dilation = geometry.strides[axis], geometry.dilations[axis]
    count, offset = geometry.out[axis], tap * dilation - geometry.pads_begin[axis]  # input index of output 0
    lo = min(count, -(offset // stride) if offset < 0 else 0)
    hi = max(lo, min(count, (size - 1 - offset) // stride + 1)) if size > offset else lo
    first = lo * stride + offset
    return lo, hi, slice(first, first + (hi - lo - 1) * stride + 1 if hi > lo else first, stride)


def separable_reduce(x: np.ndarray, geometry: WindowGeometry, combine: np.ufunc, identity: float | int,
                     dtype: np.dtype | None = None) -> np.ndarray:
    """Reduce every window of an unpadded (N, C, *spatial) array with ``combine`` (np.maximum, np.add), the
    padding counting as ``identity``, one spatial axis at a time: a KxK window then costs K+K strided passes
    instead of K*K, and the later passes run over an array already shrunk by the stride. Max and sum are
    separable, so the result is the window reduction; ``dtype`` is the accumulator's.

    The leading axes go first: a strided pass along the last axis gathers every s-th element, the slowest
    access, so it runs last, over the smallest array (1.4x on a 3x3/2 max pool at 112x112). Each tap's
    window is clipped to the input (no padded copy); a tap that covers every output position initialises
    the result and the others are combined in kernel order after it."""
    result = x
    rank = len(geometry.kernel)
    for axis in range(rank):
        accumulator = np.dtype(dtype or result.dtype)
        if axis == rank - 1 and _flat_ok(result, geometry, axis):
            result = _reduce_last_axis_flat(result, geometry, combine, identity, accumulator)
        else:
            result = _reduce_axis(result, geometry, axis, combine, identity, accumulator, 0, geometry.out[axis])
    return result


def _reduce_axis(result: np.ndarray, geometry: WindowGeometry, axis: int, combine: np.ufunc,
                 identity: float | int, accumulator: np.dtype, begin: int, end: int) -> np.ndarray:
    """The reduction along ``axis`` of output positions [begin, end) only."""
    stride = geometry.strides[axis]
    before = (slice(None),) * (2 + axis)
    spans = []
    for t in range(geometry.kernel[axis]):
        lo, hi, source = tap_span(geometry, axis, t, result.shape[2 + axis])
        clipped_lo, clipped_hi = max(lo, begin), min(hi, end)
        start = source.start + (clipped_lo - lo) * stride
        spans.append((clipped_lo - begin, clipped_hi - begin,
                      slice(start, start + (clipped_hi - clipped_lo - 1) * stride + 1, stride)))
    first = _covering_tap(geometry, axis, result.shape[2 + axis])
    if first is None:
        reduced = np.full(result.shape[:2 + axis] + (end - begin,) + result.shape[3 + axis:], identity,
                          dtype=accumulator)
    else:
        reduced = np.array(result[before + (spans[first][2],)], dtype=accumulator)
    for t, (lo, hi, source) in enumerate(spans):
        if t != first and hi > lo:
            target = reduced[before + (slice(lo, hi),)]
            combine(target, result[before + (source,)], out=target)
    return reduced


def _covering_tap(geometry: WindowGeometry, axis: int, size: int) -> int | None:
    """The first tap whose clipped window covers every output position of ``axis``, if any."""
    for t in range(geometry.kernel[axis]):
        lo, hi, _ = tap_span(geometry, axis, t, size)
        if lo == 0 and hi == geometry.out[axis]:
            return t
    return None


def _flat_ok(result: np.ndarray, geometry: WindowGeometry, axis: int) -> bool:
    """Whether the last axis can be reduced over the flattened array: stride 1, as many outputs as inputs
    (so that output and input positions share their flat index) and a tap that covers every output."""
    size = result.shape[2 + axis]
    return (geometry.strides[axis] == 1 and geometry.out[axis] == size and size > 1 and result.flags.c_contiguous
            and _covering_tap(geometry, axis, size) is not None)


def _reduce_last_axis_flat(result: np.ndarray, geometry: WindowGeometry, combine: np.ufunc,
                           identity: float | int, accumulator: np.dtype) -> np.ndarray:
    """Stride-1 reduction along the last axis, each tap one combine over the whole flattened array instead
    of one per (short) row: numpy's per-row loop overhead dominates rows of 7 to 28 elements. A tap at
    offset ``o`` then also reads across row ends for the ``|o|`` border columns; those are recomputed row
    by row afterwards, in the same order, so the result is exactly the row-by-row one."""
    axis = len(geometry.kernel) - 1
    size = result.shape[-1]
    first = _covering_tap(geometry, axis, size)
    flat = result.reshape(-1)
    reduced = np.array(flat, dtype=accumulator)
    spans = [tap_span(geometry, axis, t, size) for t in range(geometry.kernel[axis])]
    for t, (lo, hi, source) in enumerate(spans):
        offset = source.start - lo   # input index minus output index
        if t == first or hi <= lo:
            continue
        if offset >= 0:
            combine(reduced[:flat.size - offset], flat[offset:], out=reduced[:flat.size - offset])
        else:
            combine(reduced[-offset:], flat[:flat.size + offset], out=reduced[-offset:])
    reduced = reduced.reshape(result.shape)
    inner = max(lo for lo, hi, _ in spans if hi > lo)
    outer = min(hi for lo, hi, _ in spans if hi > lo)
    if inner > 0:
        reduced[..., :inner] = _reduce_axis(result, geometry, axis, combine, identity, accumulator, 0, inner)
    if outer < size:
        reduced[..., outer:] = _reduce_axis(result, geometry, axis, combine, identity, accumulator, outer, size)
    return reduced


def window_counts(geometry: WindowGeometry, sizes: Sequence[int], include_pad: bool) -> np.ndarray:
    """How many elements each pooling window averages, shape (1, 1, *out): the ones inside the input, or with
    ``include_pad`` also the declared padding (never the extra padding ceil_mode adds, as onnxruntime
    counts). A product of per-axis counts, the window being a box."""
    counts = np.ones((1, 1) + (1,) * len(sizes))
    for axis, size in enumerate(sizes):
        if include_pad:   # the declared padding counts as input: shift the extent to start at the padding
            size = geometry.pads_begin[axis] + size + geometry.declared_end[axis]
            geometry_axis = replace(geometry, pads_begin=(0,) * len(sizes))
        else:
            geometry_axis = geometry
        per_axis = np.zeros(geometry.out[axis])
        for t in range(geometry.kernel[axis]):
            lo, hi, _ = tap_span(geometry_axis, axis, t, size)
            per_axis[lo:hi] += 1
        counts = counts * per_axis.reshape((-1,) + (1,) * (len(sizes) - 1 - axis))
    return counts
