"""Conv and ConvTranspose as one batched matrix multiplication per call (im2col / col2im over strided
window views), for any number of spatial dimensions and any group count."""
from __future__ import annotations

import itertools
import math

import numpy as np

from hetc.sim.kernels._windows import WindowGeometry, pad_spatial, tap_span, taps, window_geometry
from hetc.sim.kernels.registry import KernelCall, kernel


def _bias_shape(rank: int) -> tuple[int, ...]:
    return (1, -1) + (1,) * rank


@kernel("Conv")
def conv(call: KernelCall) -> np.ndarray:
    x, w, bias = call.required(0), call.required(1), call.input(2)
    n, channels = x.shape[:2]
    rank = x.ndim - 2
    out_channels = w.shape[0]
    groups = call.attr("group", 1)
    kernel_shape = call.attr("kernel_shape") or w.shape[2:]
    geometry = window_geometry(x.shape[2:], kernel_shape, call.attr("strides"), call.attr("dilations"),
                               call.attr("pads"), call.attr("auto_pad", "NOTSET"))
    cg, mg = channels // groups, out_channels // groups
    if _is_pointwise(geometry):
        y = _pointwise(x, w, geometry, groups)
    elif groups == 1 and _shifted_pays(geometry, x.shape[2:], channels, out_channels):
        y = _shifted_matmul(pad_spatial(x, geometry, 0.0), w, geometry)
    elif cg == 1 and groups > 1:
        y = _depthwise(pad_spatial(x, geometry, 0.0), w, geometry, groups, mg)
    else:
        y = _im2col_matmul(x, w, geometry, groups, cg, mg)
    if bias is not None:   # every branch returns a fresh array: add in place instead of allocating another
        y += bias.reshape(_bias_shape(rank)).astype(y.dtype, copy=False)
    return y


def _shifted_pays(geometry: WindowGeometry, in_sizes: tuple[int, ...], channels: int, out_channels: int) -> bool:
    """Whether a stride-1 convolution runs faster as a shifted per-tap matmul than through im2col. Per output
    position and tap, im2col copies Cin values; the shifted form instead adds Cout values per padded
    position and multiplies over the padding positions too (2*Cin*Cout flops each). One flop of the
    near-peak sgemm costs about a tenth of a copied or added element, hence the test (measured on 3x3
    convs: the shifted form wins at 56x56 with Cout <= Cin/2 and at 28x28 with Cout <= Cin/4, im2col at 14x14
    and below, where the padding is a large share of the image and the im2col buffer stays in cache)."""
    if any(st != 1 for st in geometry.strides):
        return False
    padded = math.prod(b + size + e for b, size, e in zip(geometry.pads_begin, in_sizes, geometry.pads_end))
    ratio = padded / math.prod(geometry.out)
    return ratio * out_channels + (ratio - 1) * out_channels * channels / 10 < channels


def _is_pointwise(geometry: WindowGeometry) -> bool:
    return (all(k == 1 for k in geometry.kernel) and not any(geometry.pads_begin)
            and not any(geometry.pads_end))


def _pointwise(x: np.ndarray, w: np.ndarray, geometry: WindowGeometry, groups: int) -> np.ndarray:
    """A 1x1 convolution is one matmul over the channels (per group): no im2col copy at all (strided 1x1
    convs pick their pixels with one strided slice first). (N, G, Cg, P) pixels times (G, Mg, Cg) weights
    give (N, G, Mg, P), already the NCHW layout of the result."""
    n, channels = x.shape[:2]
    if any(s != 1 for s in geometry.strides):
        x = x[(slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s)
                                                 for o, s in zip(geometry.out, geometry.strides))]
    pixels = np.ascontiguousarray(x).reshape(n, groups, channels // groups, -1)
    weights = w.reshape(groups, w.shape[0] // groups, channels // groups).astype(x.dtype, copy=False)
    return np.matmul(weights, pixels).reshape((n, w.shape[0]) + geometry.out)


def _shifted_matmul(padded: np.ndarray, w: np.ndarray, geometry: WindowGeometry) -> np.ndarray:
    """Stride-1 convolution with few output channels: one matmul of every tap's weights with the padded
    input as it lies in memory, then a shifted sum of the per-tap results. Over the flattened padded image,
    a tap is a constant offset, so no im2col copy (Cin*k values per pixel) is ever made; the sum touches
    k*Cout values per pixel instead, the better deal when Cout is well below Cin (DenseNet's 128->32 3x3
    convs run in two thirds of the time). The flat trick also computes the positions that wrap across a row
    end; they are sliced off at the end."""
    n, channels = padded.shape[:2]
    spatial, out_channels = padded.shape[2:], w.shape[0]
    total = math.prod(spatial)
    flat_strides = [math.prod(spatial[i + 1:]) for i in range(len(spatial))]
    offsets = [sum(t * d * fs for t, d, fs in zip(tap, geometry.dilations, flat_strides))
               for tap in itertools.product(*(range(k) for k in geometry.kernel))]
    span = total - max(offsets)   # every output position lies below it
    tap_weights = np.moveaxis(w.reshape(out_channels, channels, -1), 2, 0).reshape(-1, channels)
    per_tap = np.matmul(tap_weights.astype(padded.dtype, copy=False), padded.reshape(n, channels, total))
    per_tap = per_tap.reshape(n, len(offsets), out_channels, total)
    acc = np.empty((n, out_channels, total), dtype=per_tap.dtype)
    acc[..., span:] = 0
    np.copyto(acc[..., :span], per_tap[:, 0, :, offsets[0]:offsets[0] + span])
    for k in range(1, len(offsets)):
        acc[..., :span] += per_tap[:, k, :, offsets[k]:offsets[k] + span]
    window = tuple(slice(0, o) for o in geometry.out)
    return np.ascontiguousarray(acc.reshape((n, out_channels) + spatial)[(slice(None), slice(None)) + window])


def _depthwise(padded: np.ndarray, w: np.ndarray, geometry: WindowGeometry, groups: int, mg: int) -> np.ndarray:
    """One input channel per group: a multiply-accumulate per kernel tap beats a batch of tiny matmuls."""
    if all(st == 1 for st in geometry.strides):
        return _depthwise_flat(padded, w, geometry, groups, mg)
    n, rank = padded.shape[0], padded.ndim - 2
    weights = w.reshape((groups, mg) + tuple(geometry.kernel)).astype(padded.dtype, copy=False)
    y = np.zeros((n, groups, mg) + geometry.out, dtype=padded.dtype)
    product = np.empty_like(y)   # one scratch array for every tap's product instead of one allocation each
    for tap, view in taps(padded, geometry):  # view: (N, G, *out)
        tap_weights = weights[(slice(None), slice(None)) + tap].reshape((1, groups, mg) + (1,) * rank)
        np.multiply(view[:, :, np.newaxis], tap_weights, out=product)
        y += product
    return y.reshape((n, groups * mg) + geometry.out)


def _depthwise_flat(padded: np.ndarray, w: np.ndarray, geometry: WindowGeometry, groups: int, mg: int
                    ) -> np.ndarray:
    """Stride-1 depthwise convolution over the flattened padded image, where every tap is a constant offset
    (as in ``_shifted_matmul``): each tap's multiply-accumulate is one long contiguous pass per channel
    instead of one short pass per output row (1.7x on 144 channels at 56x56). The positions that wrap
    across a row end are sliced off at the end; the sum runs in tap order as the strided version's does."""
    n, spatial = padded.shape[0], padded.shape[2:]
    total = math.prod(spatial)
    flat_strides = [math.prod(spatial[i + 1:]) for i in range(len(spatial))]
    offsets = [sum(t * d * fs for t, d, fs in zip(tap, geometry.dilations, flat_strides))
               for tap in itertools.product(*(range(k) for k in geometry.kernel))]
    span = total - max(offsets)
    flat = padded.reshape(n, groups, 1, total)
    weights = w.reshape(groups, mg, -1).astype(padded.dtype, copy=False)
    acc = np.empty((n, groups, mg, total), dtype=padded.dtype)
    acc[..., span:] = 0
    np.multiply(flat[..., offsets[0]:offsets[0] + span], weights[:, :, 0:1], out=acc[..., :span])
    product = np.empty((n, groups, mg, span), dtype=padded.dtype)
    for k in range(1, len(offsets)):
        np.multiply(flat[..., offsets[k]:offsets[k] + span], weights[:, :, k:k + 1], out=product)
        acc[..., :span] += product
    window = tuple(slice(0, o) for o in geometry.out)
    result = acc.reshape((n, groups * mg) + spatial)[(slice(None), slice(None)) + window]
    return np.ascontiguousarray(result)


def _im2col_matmul(x: np.ndarray, w: np.ndarray, geometry: WindowGeometry, groups: int, cg: int, mg: int
                   ) -> np.ndarray:
    """The general case: im2col into a contiguous (G, Cg*k, N*out) buffer, then one (batched) matmul. The
    buffer is filled with one slice assignment per kernel tap straight from the unpadded input (the taps'
    windows are clipped to the input, the clipped-off border is zeroed), so neither a padded copy nor a
    2*rank-dimensional transpose copy of the window view is ever made. With one image the matmul writes
    straight into the NCHW result."""
    n, rank = x.shape[0], x.ndim - 2
    out, kernel_shape, strides = geometry.out, tuple(geometry.kernel), geometry.strides
    out_numel, k_numel = math.prod(out), math.prod(kernel_shape)
    # (G, Cg, N, *spatial) view of the input: no copy.
    source = x.reshape((n, groups, cg) + x.shape[2:]).transpose((1, 2, 0) + tuple(range(3, 3 + rank)))
    # Strided taps gather every s-th element, much slower per element than a contiguous copy. When the
    # taps outnumber the stride phases (3x3/2, 7x7/2: each phase is read by two taps or more), one pass
    # splits the input into its phases (x[..., r::s] per residue r) and every tap then copies a contiguous
    # run out of one phase (the 7x7/2 stem's im2col fill: 0.6 instead of 1.0 ms).
    phases: dict[tuple[int, ...], np.ndarray] | None = (
        {} if any(st > 1 for st in strides) and k_numel > math.prod(strides) else None)
    cols = np.empty((groups, cg) + kernel_shape + (n,) + out, dtype=x.dtype)
    everything = (slice(None),) * 3   # G, Cg, N
    for tap in itertools.product(*(range(k) for k in kernel_shape)):
        dest = cols[(slice(None), slice(None)) + tap]   # (G, Cg, N, *out)
        spans = [tap_span(geometry, axis, t, x.shape[2 + axis]) for axis, t in enumerate(tap)]
        for axis, (lo, hi, _) in enumerate(spans):
            if lo > 0:
                dest[everything + (slice(None),) * axis + (slice(0, lo),)] = 0
            if hi < out[axis]:
                dest[everything + (slice(None),) * axis + (slice(hi, None),)] = 0
        if any(hi == lo for lo, hi, _ in spans):
            continue
        kept = everything + tuple(slice(lo, hi) for lo, hi, _ in spans)
        if phases is None:
            dest[kept] = source[everything + tuple(picks for _, _, picks in spans)]
            continue
        residues = tuple(picks.start % st for (_, _, picks), st in zip(spans, strides))
        if residues not in phases:
            phases[residues] = np.ascontiguousarray(
                source[everything + tuple(slice(r, None, st) for r, st in zip(residues, strides))])
        dest[kept] = phases[residues][everything + tuple(
            slice(picks.start // st, picks.start // st + hi - lo) for (lo, hi, picks), st in zip(spans, strides))]
    columns = cols.reshape(groups, cg * k_numel, n * out_numel)
    weights = w.reshape(groups, mg, cg * k_numel).astype(x.dtype, copy=False)
    if n == 1:   # (G, Mg, out) is already the NCHW layout of the result
        y = np.empty((1, groups * mg) + out, dtype=x.dtype)
        np.matmul(weights, columns, out=y.reshape(groups, mg, out_numel))
        return y
    y = np.matmul(weights, columns).reshape((groups, mg, n) + out)   # (G, Mg, N, *out)
    return np.ascontiguousarray(y.transpose((2, 0, 1) + tuple(range(3, 3 + rank)))).reshape(
        (n, groups * mg) + out)


def _transpose_begin_pads(call: KernelCall, in_sizes: tuple[int, ...], out_sizes: tuple[int, ...],
                          kernel_shape: tuple[int, ...], strides: tuple[int, ...],
                          dilations: tuple[int, ...], output_padding: tuple[int, ...]) -> list[int]:
    """Where the output window starts inside the full col2im result, per ONNX's ConvTranspose rules."""
    rank = len(in_sizes)
    pads = call.attr("pads")
    auto_pad = call.attr("auto_pad", "NOTSET")
    if pads is not None and call.attr("output_shape") is None and auto_pad in ("NOTSET", ""):
        return [int(p) for p in pads[:rank]]
    if call.attr("output_shape") is None and auto_pad in ("NOTSET", "VALID", ""):
        return [0] * rank
    begins = []
    for i in range(rank):
        total = (strides[i] * (in_sizes[i] - 1) + output_padding[i] + (kernel_shape[i] - 1) * dilations[i] + 1
                 - out_sizes[i])
        begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    return begins


@kernel("ConvTranspose")
def conv_transpose(call: KernelCall) -> np.ndarray:
    x, w, bias = call.required(0), call.required(1), call.input(2)
    n, channels = x.shape[:2]
    rank = x.ndim - 2
    groups = call.attr("group", 1)
    cg, mg = channels // groups, w.shape[1]
    kernel_shape = tuple(call.attr("kernel_shape") or w.shape[2:])
    strides = tuple(call.attr("strides") or (1,) * rank)
    dilations = tuple(call.attr("dilations") or (1,) * rank)
    output_padding = tuple(call.attr("output_padding") or (0,) * rank)
    in_sizes, out_sizes = x.shape[2:], call.output_shape[2:]
    begins = _transpose_begin_pads(call, in_sizes, out_sizes, kernel_shape, strides, dilations, output_padding)

    # cols[g] = W_g^T @ X_g: every input pixel's contribution to every kernel tap, (G, Mg*k, N*in).
    x_cols = x.reshape(n, groups, cg, -1).transpose(1, 2, 0, 3).reshape(groups, cg, -1)
    w_rows = w.reshape(groups, cg, mg * math.prod(kernel_shape)).transpose(0, 2, 1).astype(x.dtype, copy=False)
    cols = np.matmul(w_rows, x_cols).reshape((groups, mg) + kernel_shape + (n,) + in_sizes)

    # col2im: one strided accumulate per kernel tap into a buffer covering both the natural extent and the
    # requested output window (which output_padding or output_shape may push past it).
    natural = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(in_sizes, strides, kernel_shape, dilations)]
    low = [min(0, b) for b in begins]
    high = [max(nat, b + o) for nat, b, o in zip(natural, begins, out_sizes)]
    full = np.zeros((n, groups, mg) + tuple(h - lo for h, lo in zip(high, low)), dtype=cols.dtype)
    for tap in itertools.product(*(range(k) for k in kernel_shape)):
        target = tuple(slice(t * d - lo, t * d - lo + (i - 1) * s + 1, s)
                       for t, d, lo, i, s in zip(tap, dilations, low, in_sizes, strides))
        contribution = cols[(slice(None), slice(None)) + tap]  # (G, Mg, N, *in)
        full[(slice(None),) * 3 + target] += contribution.transpose((2, 0, 1) + tuple(range(3, 3 + rank)))
    window = tuple(slice(b - lo, b - lo + o) for b, lo, o in zip(begins, low, out_sizes))
    y = full[(slice(None),) * 3 + window].reshape((n, groups * mg) + tuple(out_sizes))
    if bias is not None:
        y = y + bias.reshape(_bias_shape(rank)).astype(y.dtype, copy=False)
    return y
