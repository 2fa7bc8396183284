"""Gemm and MatMul: one BLAS call each, through numpy."""
from __future__ import annotations

import numpy as np

from hetc.sim.kernels.registry import KernelCall, kernel


@kernel("Gemm")
def gemm(call: KernelCall) -> np.ndarray:
    a, b, c = call.required(0), call.required(1), call.input(2)
    if call.attr("transA", 0):
        a = a.T
    if call.attr("transB", 0):
        b = b.T
    alpha, beta = call.attr("alpha", 1.0), call.attr("beta", 1.0)
    y = np.matmul(a, b)
    if alpha != 1.0:
        y = y * np.asarray(alpha, dtype=y.dtype)
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else c * np.asarray(beta, dtype=c.dtype))
    return y


@kernel("MatMul")
def matmul(call: KernelCall) -> np.ndarray:
    return np.matmul(call.required(0), call.required(1))
