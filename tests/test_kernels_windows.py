"""The sliding-window helpers the Conv and pooling kernels share: clipped tap spans and the separable window
reduction over an unpadded input, checked against the plain definition over a padded copy."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from hetc.sim.kernels._windows import (pad_spatial, separable_reduce, tap_span, window_counts, window_geometry,
                                       windows)


@pytest.mark.parametrize("size, kernel, stride, dilation, pads", [
    (7, 3, 1, 1, (1, 1)), (7, 3, 2, 1, (0, 1)), (5, 2, 3, 2, (2, 0)), (4, 3, 1, 1, (5, 5)), (9, 5, 2, 2, (0, 0)),
])
def test_tap_span_matches_the_padded_positions(size, kernel, stride, dilation, pads):
    geometry = window_geometry((size,), (kernel,), (stride,), (dilation,), pads)
    for t in range(kernel):
        lo, hi, source = tap_span(geometry, 0, t, size)
        indices = [o * stride + t * dilation - pads[0] for o in range(geometry.out[0])]
        inside = [o for o, i in enumerate(indices) if 0 <= i < size]
        assert (lo, hi) == ((inside[0], inside[-1] + 1) if inside else (lo, lo))
        assert list(range(size))[source] == [indices[o] for o in inside]


def _reference(x: np.ndarray, geometry, reduce, identity: float) -> np.ndarray:
    """Every window of a padded copy, reduced left to right in kernel order."""
    view = windows(pad_spatial(x, geometry, identity), geometry)
    result = None
    for tap in itertools.product(*(range(k) for k in geometry.kernel)):
        value = view[(Ellipsis,) + tap]
        result = value.copy() if result is None else reduce(result, value)
    return result


@pytest.mark.parametrize("shape, kernel, strides, pads, ceil_mode", [
    ((2, 3, 13, 13), (3, 3), (1, 1), (1, 1, 1, 1), False),   # stride 1 'same': the flattened last-axis path
    ((1, 4, 9, 7), (3, 3), (2, 2), (1, 1, 1, 1), True),
    ((1, 2, 8, 8), (5, 5), (1, 1), (2, 2, 2, 2), False),
    ((1, 2, 6, 6), (3, 3), (1, 1), (0, 0, 0, 0), False),
    ((1, 2, 5, 6, 7), (2, 3, 3), (1, 1, 1), (0, 1, 1, 1, 1, 1), False),
    ((1, 2, 10), (4,), (3,), (2, 1), True),
])
def test_separable_reduce_matches_the_windows_of_a_padded_copy(shape, kernel, strides, pads, ceil_mode):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    geometry = window_geometry(shape[2:], kernel, strides, None, pads, ceil_mode=ceil_mode, pooling=True)
    np.testing.assert_array_equal(separable_reduce(x, geometry, np.maximum, -np.inf),
                                  _reference(x, geometry, np.maximum, -np.inf))
    sums = separable_reduce(x.astype(np.float64), geometry, np.add, 0.0)
    np.testing.assert_allclose(sums, _reference(x.astype(np.float64), geometry, np.add, 0.0), rtol=1e-12,
                               atol=1e-12)
    ones = np.ones((1, 1) + shape[2:])
    np.testing.assert_array_equal(window_counts(geometry, shape[2:], include_pad=False),
                                  _reference(ones, geometry, np.add, 0.0))
