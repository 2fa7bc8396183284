"""Activations, arithmetic, comparisons and other element-by-element kernels, all with numpy
(multidirectional) broadcasting as ONNX defines it since opset 7."""
from __future__ import annotations

import functools
import math

import numpy as np

from hetc.sim.kernels._math import erf
from hetc.sim.kernels.registry import KernelCall, kernel
from hetc.target.ops import UNSUPPORTED_CAST_TARGETS

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _legacy_broadcast(call: KernelCall, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Before opset 7 a binary op broadcast B only with ``broadcast=1``, aligning it at ``axis`` (suffix
    alignment when absent); reshape B so numpy broadcasting gives the same result."""
    if call.opset >= 7 or not call.attr("broadcast", 0) or b.ndim >= a.ndim:
        return b
    axis = call.attr("axis", a.ndim - b.ndim)
    axis = axis + a.ndim if axis < 0 else axis
    return b.reshape((1,) * axis + b.shape + (1,) * (a.ndim - axis - b.ndim))


def _truncating_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero, as C (and so onnxruntime) does; numpy's ``//`` floors."""
    quotient = np.floor_divide(a, b)
    inexact_negative = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return quotient + inexact_negative.astype(quotient.dtype)


def _power(base: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """ONNX Pow keeps the base's type whatever the exponent's; integer powers go through float64 so a
    negative exponent does not raise as numpy's integer power does."""
    if np.issubdtype(base.dtype, np.floating):
        return np.power(base, exponent.astype(base.dtype))
    return np.power(base.astype(np.float64), exponent.astype(np.float64)).astype(base.dtype)


_BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
}


@kernel("Add", "Sub", "Mul", "Div", "Pow")
def binary_arithmetic(call: KernelCall) -> np.ndarray:
    a, b = call.required(0), call.required(1)
    b = _legacy_broadcast(call, a, b)
    if call.op_type == "Div":
        if np.issubdtype(a.dtype, np.integer):
            return _truncating_divide(a, b)
        return np.divide(a, b, out=call.into(0, a, b))
    if call.op_type == "Pow":
        return _power(a, b)
    return _BINARY[call.op_type](a, b, out=call.into(0, a, b))


@kernel("Equal", "Less", "Greater")
def comparison(call: KernelCall) -> np.ndarray:
    a, b = call.required(0), call.required(1)
    b = _legacy_broadcast(call, a, b)
    compare = {"Equal": np.equal, "Less": np.less, "Greater": np.greater}[call.op_type]
    return compare(a, b)


@kernel("Max", "Min", "Sum", "Mean")
def variadic(call: KernelCall) -> np.ndarray:
    operands = [x for x in call.inputs if x is not None]
    if call.op_type == "Mean":
        total = functools.reduce(np.add, operands)
        return total / np.asarray(len(operands), dtype=total.dtype)
    combine = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add}[call.op_type]
    if len(operands) == 2:
        return combine(*operands, out=call.into(0, *operands))
    return functools.reduce(combine, operands)


@kernel("Where")
def where(call: KernelCall) -> np.ndarray:
    return np.where(call.required(0).astype(bool), call.required(1), call.required(2))


def _elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-x))) never overflows, for either sign of x.
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype)


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
    return (0.5 * x * (1 + erf(x * _SQRT_HALF))).astype(x.dtype)


@kernel("Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Erf",
        "Softplus", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal")
def unary(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    op = call.op_type
    if op == "Relu":
        return np.maximum(x, np.zeros((), x.dtype), out=call.into(0, x))
    if op == "LeakyRelu":
        return np.where(x >= 0, x, x * np.asarray(call.attr("alpha", 0.01), dtype=x.dtype))
    if op == "Elu":
        return _elu(x, call.attr("alpha", 1.0))
    if op == "Selu":
        alpha = call.attr("alpha", 1.67326319217681884765625)
        gamma = call.attr("gamma", 1.05070102214813232421875)
        return gamma * _elu(x, alpha)
    if op == "Sigmoid":
        return _sigmoid(x)
    if op == "HardSigmoid":
        return np.clip(call.attr("alpha", 0.2) * x + call.attr("beta", 0.5), 0, 1)
    if op == "HardSwish":
        return x * np.clip(x / 6 + 0.5, 0, 1)
    if op == "Gelu":
        return _gelu(x, call.attr("approximate", "none"))
    if op == "Erf":
        return erf(x)
    if op == "Softplus":
        return np.logaddexp(np.zeros((), x.dtype), x)
    if op == "Reciprocal":
        return np.reciprocal(x.astype(np.float32) if np.issubdtype(x.dtype, np.integer) else x)
    function = {"Tanh": np.tanh, "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Neg": np.negative,
                "Abs": np.abs}[op]
    return function(x)


@kernel("PRelu")
def prelu(call: KernelCall) -> np.ndarray:
    x, slope = call.required(0), call.required(1)
    if call.opset < 7 and slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1]:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))  # the old per-channel form
    return np.where(x < 0, x * slope, x)


@kernel("Clip")
def clip(call: KernelCall) -> np.ndarray:
    x = call.required(0)
    if call.opset < 11:
        low, high = call.attr("min"), call.attr("max")
    else:
        low, high = call.input(1), call.input(2)
    if low is not None:
        x = np.maximum(x, np.asarray(low, dtype=x.dtype))
    if high is not None:
        x = np.minimum(x, np.asarray(high, dtype=x.dtype))
    return x


@kernel("Dropout")
def dropout(call: KernelCall) -> list[np.ndarray]:
    """Inference Dropout is the identity (mask all true). Training mode with a non-zero ratio draws a random
    mask, which these kernels do not implement: capability sends a Dropout whose training_mode may be true
    to the CPU (``hetc.target.ops.node_limitation``), so reaching the failure below is a scheduling bug."""
    x = call.required(0)
    training = call.input(2)
    ratio = call.input(1)
    ratio_value = float(ratio) if ratio is not None else call.attr("ratio", 0.5)
    if training is not None and bool(training) and ratio_value != 0.0:
        call.fail("training_mode=True draws a random mask")
    if call.opset < 7 and call.attr("is_test", 0) == 0 and len(call.outputs) > 1:
        call.fail("is_test=0 (training) draws a random mask")
    results = [x]
    if len(call.outputs) > 1:
        results.append(np.ones(x.shape, dtype=bool))
    return results




@kernel("Cast")
def cast(call: KernelCall) -> np.ndarray:
    from hetc.ir import np_dtype

    target = call.outputs[0][0]
    x = call.required(0)
    if target.startswith(UNSUPPORTED_CAST_TARGETS) or x.dtype == np.dtype(object):
        call.fail(f"casts to or from {target if target.startswith(UNSUPPORTED_CAST_TARGETS) else 'string'} "
                  f"need ONNX's saturation and parsing rules")
    return x.astype(np_dtype(target))
