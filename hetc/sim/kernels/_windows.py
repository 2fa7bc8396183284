"""Sliding-window geometry shared by Conv and the pooling kernels: padding (explicit, auto_pad, ceil_mode),
output sizes, and the strided window view over a padded input that replaces per-pixel loops."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
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


def separable_reduce(padded: np.ndarray, geometry: WindowGeometry, combine: np.ufunc,
                     dtype: np.dtype | None = None) -> np.ndarray:
    """Reduce every window of an already padded (N, C, *spatial) array with ``combine`` (np.maximum,
    np.add), one spatial axis at a time: a KxK window then costs K+K strided passes instead of K*K, and the
    later passes run over an array already shrunk by the stride. Max and sum are separable, so the
    result is the window reduction; ``dtype`` is the accumulator's (sums accumulate in float64)."""
    result = padded
    for axis in reversed(range(len(geometry.kernel))):
        k, s, d, o = geometry.kernel[axis], geometry.strides[axis], geometry.dilations[axis], geometry.out[axis]
        before = (slice(None),) * (2 + axis)
        reduced = np.array(result[before + (slice(0, (o - 1) * s + 1, s),)], dtype=dtype or result.dtype)
        for t in range(1, k):
            combine(reduced, result[before + (slice(t * d, t * d + (o - 1) * s + 1, s),)], out=reduced)
        result = reduced
    return result
