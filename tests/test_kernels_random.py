"""NPU kernels against onnxruntime (the CPU path) on randomized shapes and attributes: Conv, ConvTranspose,
pooling, Gemm, MatMul, broadcast elementwise ops and Resize."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetc.ir import dtype_from_numpy
from hetc.sim.kernels import KernelError, run_kernel, run_on_cpu

OPSET = {"": 19}
# Derandomized so CI sees the same examples every run; explore with more examples and a random seed by
# editing these when changing a kernel (300/600 examples passed when they were written).
EXAMPLES = settings(max_examples=30, deadline=None, derandomize=True)
MANY = settings(max_examples=150, deadline=None, derandomize=True)  # cheap ops, many rounding corner cases


def assert_npu_matches_onnxruntime(op: str, attrs: dict, inputs: list, opset: dict = OPSET,
                                   device: str = "npu") -> None:
    outputs = [("float32", ())]  # onnxruntime infers the real shapes; declare its results to the kernel
    expected = run_on_cpu(op, "", attrs, inputs, outputs, opset)
    declared = [(dtype_from_numpy(e.dtype), e.shape) for e in expected]
    actual = run_kernel(device, op, "", attrs, inputs, declared, opset)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@EXAMPLES
@given(rank=st.sampled_from([1, 2, 2, 3]), groups=st.sampled_from([1, 2, 4]), per_group=st.integers(1, 3),
       out_per_group=st.integers(1, 3), kernel=st.integers(1, 3), stride=st.integers(1, 3),
       dilation=st.integers(1, 2), pad=st.integers(0, 2), auto_pad=st.sampled_from(["NOTSET", "SAME_UPPER",
                                                                                      "SAME_LOWER", "VALID"]),
       bias=st.booleans(), batch=st.integers(1, 2), seed=st.integers(0, 1000))
def test_conv(rank, groups, per_group, out_per_group, kernel, stride, dilation, pad, auto_pad, bias, batch, seed):
    rng = _rng(seed)
    size = 7 if rank < 3 else 5
    x = rng.standard_normal((batch, groups * per_group) + (size,) * rank).astype(np.float32)
    w = rng.standard_normal((groups * out_per_group, per_group) + (kernel,) * rank).astype(np.float32)
    attrs = {"group": groups, "strides": [stride] * rank, "dilations": [dilation] * rank, "auto_pad": auto_pad}
    if auto_pad == "NOTSET":
        attrs["pads"] = [pad] * rank + [max(0, pad - 1)] * rank
    inputs = [x, w] + ([rng.standard_normal(w.shape[0]).astype(np.float32)] if bias else [])
    assert_npu_matches_onnxruntime("Conv", attrs, inputs)


@EXAMPLES
@given(rank=st.sampled_from([1, 2, 2, 3]), groups=st.sampled_from([1, 2]), per_group=st.integers(1, 3),
       out_per_group=st.integers(1, 3), kernel=st.integers(1, 3), stride=st.integers(1, 3),
       dilation=st.integers(1, 2), pad=st.integers(0, 1), output_padding=st.integers(0, 1),
       use_output_shape=st.booleans(), auto_pad=st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER",
                                                                  "VALID"]), seed=st.integers(0, 1000))
def test_conv_transpose(rank, groups, per_group, out_per_group, kernel, stride, dilation, pad, output_padding,
                        use_output_shape, auto_pad, seed):
    rng = _rng(seed)
    x = rng.standard_normal((1, groups * per_group) + (4,) * rank).astype(np.float32)
    w = rng.standard_normal((groups * per_group, out_per_group) + (kernel,) * rank).astype(np.float32)
    output_padding = min(output_padding, stride - 1)  # onnxruntime requires output_padding < stride
    attrs = {"group": groups, "strides": [stride] * rank, "dilations": [dilation] * rank}
    if auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad
    elif use_output_shape:
        natural = stride * 3 + (kernel - 1) * dilation + 1
        attrs["output_shape"] = [natural - pad] * rank
    else:
        attrs["pads"] = [pad] * (2 * rank)
        attrs["output_padding"] = [output_padding] * rank
    b = rng.standard_normal(groups * out_per_group).astype(np.float32)
    assert_npu_matches_onnxruntime("ConvTranspose", attrs, [x, w, b])


@EXAMPLES
@given(op=st.sampled_from(["MaxPool", "AveragePool"]), rank=st.sampled_from([1, 2, 2, 3]),
       kernel=st.integers(1, 3), stride=st.integers(1, 3), dilation=st.integers(1, 2), pad=st.integers(0, 2),
       ceil_mode=st.booleans(), count_include_pad=st.booleans(),
       auto_pad=st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]), seed=st.integers(0, 99))
def test_pooling(op, rank, kernel, stride, dilation, pad, ceil_mode, count_include_pad, auto_pad, seed):
    size = 8 if rank < 3 else 5
    x = _rng(seed).standard_normal((2, 3) + (size,) * rank).astype(np.float32)
    pad = min(pad, kernel - 1)  # ONNX requires pads smaller than the kernel
    attrs = {"kernel_shape": [kernel] * rank, "strides": [stride] * rank, "dilations": [dilation] * rank,
             "ceil_mode": int(ceil_mode), "auto_pad": auto_pad}
    if auto_pad == "NOTSET":
        attrs["pads"] = [pad] * rank + [max(0, pad - 1)] * rank
    if op == "AveragePool":
        attrs["count_include_pad"] = int(count_include_pad)
    if auto_pad.startswith("SAME") and stride > kernel:  # documented: no NPU kernel, runs on the CPU
        with pytest.raises(KernelError, match="stride larger than the kernel"):
            run_kernel("npu", op, "", attrs, [x], [("float32", x.shape)], OPSET)
        return
    assert_npu_matches_onnxruntime(op, attrs, [x])


@EXAMPLES
@given(m=st.integers(1, 9), k=st.integers(1, 9), n=st.integers(1, 9), trans_a=st.booleans(),
       trans_b=st.booleans(), alpha=st.sampled_from([1.0, 0.5, -2.0]), beta=st.sampled_from([1.0, 0.0, 3.0]),
       c_shape=st.sampled_from(["none", "full", "row", "column", "scalar", "vector"]), seed=st.integers(0, 99))
def test_gemm(m, k, n, trans_a, trans_b, alpha, beta, c_shape, seed):
    rng = _rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c_shapes = {"full": (m, n), "row": (1, n), "column": (m, 1), "scalar": (), "vector": (n,)}
    inputs = [a, b]
    if c_shape != "none":
        inputs.append(rng.standard_normal(c_shapes[c_shape]).astype(np.float32))
    attrs = {"transA": int(trans_a), "transB": int(trans_b), "alpha": alpha, "beta": beta}
    assert_npu_matches_onnxruntime("Gemm", attrs, inputs)


_MATMUL_SHAPES = st.sampled_from([
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)),
    ((2, 1, 2, 3), (4, 3, 5)), ((1, 2, 3), (6, 3, 2)), ((2, 2, 3), (2, 3, 2)),
])


@EXAMPLES
@given(shapes=_MATMUL_SHAPES, seed=st.integers(0, 99))
def test_matmul(shapes, seed):
    rng = _rng(seed)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    assert_npu_matches_onnxruntime("MatMul", {}, [a, b])


def _broadcastable(draw_shape: tuple[int, ...], mask: list[bool], drop: int) -> tuple[int, ...]:
    """A shape that broadcasts against ``draw_shape``: some dims set to 1, some leading dims dropped."""
    return tuple(1 if m else d for d, m in zip(draw_shape, mask))[drop:]


@EXAMPLES
@given(op=st.sampled_from(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Less",
                           "Greater", "PRelu", "Where"]),
       shape=st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple),
       mask=st.lists(st.booleans(), min_size=4, max_size=4), drop=st.integers(0, 4), swap=st.booleans(),
       seed=st.integers(0, 99))
def test_broadcast_elementwise(op, shape, mask, drop, swap, seed):
    rng = _rng(seed)
    other = _broadcastable(shape, mask, min(drop, len(shape)))
    first, second = (other, shape) if swap and op != "PRelu" else (shape, other)
    a = rng.standard_normal(first).astype(np.float32)
    b = rng.standard_normal(second).astype(np.float32)
    if op == "Pow":
        a = np.abs(a) + 0.1
    if op in ("Equal",):
        b = np.where(rng.random(b.shape) < 0.5, b, 0.0).astype(np.float32)
        a = np.zeros(a.shape, np.float32)
    inputs = [a, b]
    if op == "Where":
        inputs = [rng.random(first) < 0.5, a, b]
    assert_npu_matches_onnxruntime(op, {}, inputs)


@MANY
@given(mode=st.sampled_from(["nearest", "linear"]),
       transform=st.sampled_from(["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                  "asymmetric"]),
       nearest_mode=st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]),
       out_h=st.sampled_from([1, 2, 3, 4, 5, 6, 8, 12]), out_w=st.sampled_from([1, 2, 3, 4, 6, 8, 10, 12, 16, 24]),
       by_scales=st.booleans(), seed=st.integers(0, 99))
def test_resize(mode, transform, nearest_mode, out_h, out_w, by_scales, seed):
    # out/in is a dyadic fraction here: see docs/kernels.md for the float32 ties where nearest picks of
    # other ratios can differ from onnxruntime's.
    x = _rng(seed).standard_normal((1, 2, 4, 8)).astype(np.float32)
    attrs = {"mode": mode, "coordinate_transformation_mode": transform, "nearest_mode": nearest_mode}
    empty = np.zeros(0, np.float32)
    if by_scales:
        scales = np.array([1, 1, out_h / 4, out_w / 8], np.float32)
        inputs = [x, empty, scales]
    else:
        inputs = [x, empty, empty, np.array([1, 2, out_h, out_w], np.int64)]
    assert_npu_matches_onnxruntime("Resize", attrs, inputs)


@pytest.mark.parametrize("attrs, opset", [
    ({"mode": "nearest"}, 10),
    ({"mode": "linear"}, 10),
    ({"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}, 11),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": -7.0}, 13),
    ({"mode": "nearest", "coordinate_transformation_mode": "tf_crop_and_resize"}, 13),
])
def test_resize_legacy_and_crop(attrs, opset):
    x = _rng(3).standard_normal((1, 2, 4, 8)).astype(np.float32)
    scales = np.array([1, 1, 2.0, 0.5], np.float32)
    if opset == 10:
        inputs = [x, scales if attrs["mode"] == "linear" else np.array([1, 1, 2, 3], np.float32)]
    elif attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        inputs = [x, np.array([0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3], np.float32), np.zeros(0, np.float32),
                  np.array([1, 2, 5, 6], np.int64)]
    else:
        inputs = [x, np.zeros(0, np.float32), scales]
    assert_npu_matches_onnxruntime("Resize", attrs, inputs, opset={"": opset})


# Each Conv strategy (1x1 matmul, shifted per-tap matmul, depthwise, im2col) on shapes that pick it.
@pytest.mark.parametrize("channels, out_channels, groups, kernel, stride, dilation, pads, rank, batch", [
    (8, 5, 1, 1, 1, 1, 0, 2, 2),    # pointwise
    (8, 5, 1, 1, 2, 1, 0, 2, 1),    # strided pointwise
    (8, 6, 2, 1, 1, 1, 0, 2, 2),    # grouped pointwise, batched
    (64, 4, 1, 3, 1, 2, 1, 2, 2),   # shifted: dilated, padded, batched
    (16, 3, 1, 2, 1, 1, 1, 3, 1),   # shifted in 3-D with an even kernel
    (6, 6, 6, 3, 1, 1, 1, 2, 1),    # depthwise, stride 1 (over the flattened image)
    (6, 12, 6, 3, 1, 2, 2, 2, 2),   # depthwise, two outputs per channel, dilated, batched
    (6, 6, 6, 3, 2, 1, 1, 2, 1),    # depthwise, strided
    (4, 8, 1, 3, 2, 1, 1, 2, 1),    # im2col, strided: copies out of the stride phases
    (3, 8, 1, 7, 2, 1, 3, 2, 2),    # im2col 7x7/2 (a network's stem), batched
    (4, 8, 1, 5, 3, 1, 4, 1, 1),    # im2col in 1-D, padding wider than some taps reach
    (6, 6, 2, 3, 1, 1, 1, 2, 2),    # im2col, grouped, batched
])
def test_conv_strategies(channels, out_channels, groups, kernel, stride, dilation, pads, rank, batch):
    rng = _rng(channels * 7 + out_channels)
    x = rng.standard_normal((batch, channels) + (9,) * rank).astype(np.float32)
    w = rng.standard_normal((out_channels, channels // groups) + (kernel,) * rank).astype(np.float32)
    attrs = {"group": groups, "strides": [stride] * rank, "dilations": [dilation] * rank,
             "pads": [pads] * rank + [0] * rank}
    assert_npu_matches_onnxruntime("Conv", attrs, [x, w, rng.standard_normal(out_channels).astype(np.float32)])
