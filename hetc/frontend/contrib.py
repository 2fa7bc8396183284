"""Contrib operators with standard equivalents, written as those standard ops at import.

onnxruntime's ``com.microsoft`` domain has fused forms of standard computations. Spelled as standard ops they
get ONNX shape inference, hetc's passes (the Erf form of Gelu is fused back into one Gelu by
hetc.passes.fusion) and NPU/DSP kernels wherever the presets run their parts; left alone they run on the CPU
through onnxruntime (hetc.frontend.runtime_types). Each rewrite computes what onnxruntime's kernel computes:

| contrib op | standard ops |
|---|---|
| Gelu(X) | 0.5 X (1 + Erf(X / sqrt 2)) |
| BiasGelu(A, B) | Gelu(A + B) |
| FastGelu(X, bias?) | 0.5 Y (1 + Tanh(sqrt(2/pi) (Y + 0.044715 Y^3))), Y = X + bias |
| QuickGelu(X) alpha | X Sigmoid(alpha X) |
| FusedConv(X, W, B?, Z?) activation | activation(Conv(X, W, B) + Z) for Relu, Tanh, Sigmoid, LeakyRelu, Clip, HardSigmoid |
| SkipLayerNormalization(X, skip, gamma, beta?, bias?) | LayerNormalization(X + skip + bias) over the last axis (opset >= 17; also output 3, the sum) |
| MatMulNBits(A, B, scales, zero_points?) 4 or 8 bits, B, scales and zero points constant | MatMul(A, W) with W dequantized at compile time to A's float type (onnxruntime's default accuracy level dequantizes too) |

A node is rewritten only when the dtype of its inputs is known (constants take it) and every output it has
is one the rewrite produces; anything else stays a contrib node.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.frontend.opsets import default_domain_version
from hetc.ir.dtypes import dtype_from_onnx, np_dtype

CONTRIB_DOMAIN = "com.microsoft"
_ACTIVATIONS = {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "Clip", "HardSigmoid"}


def lower_contrib_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the contrib nodes of its main graph that have a standard equivalent rewritten as it.
    Runs shape inference between rounds, so a contrib node fed by another gets its input dtype."""
    opset = {o.domain: o.version for o in model.opset_import}
    version = default_domain_version(opset) or 0
    if not any(n.domain == CONTRIB_DOMAIN for n in model.graph.node) or version < 13:
        return model
    constants = {t.name: t for t in model.graph.initializer}
    for _ in range(len(model.graph.node)):
        dtypes = _elem_types(model)
        lowered, changed = [], False
        for index, node in enumerate(model.graph.node):
            rewrite = _RULES.get(node.op_type) if node.domain == CONTRIB_DOMAIN else None
            dtype = dtypes.get(node.input[0]) if rewrite and node.input else None
            nodes = rewrite(node, f"{node.name or node.op_type}_{index}", dtype, version, constants) if dtype \
                else None
            if nodes is None:
                lowered.append(node)
            else:
                lowered.extend(nodes)
                changed = True
        if not changed:
            break
        del model.graph.node[:]
        model.graph.node.extend(lowered)
    return model


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference may fail on an untyped contrib output; use what is declared
        inferred = model
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    return types


class _Builder:
    """Nodes of one rewrite: fresh names under ``prefix``, scalar constants of the node's dtype."""

    def __init__(self, prefix: str, dtype: int):
        self.prefix, self.dtype, self.nodes, self.count = prefix, dtype, [], 0

    def name(self) -> str:
        self.count += 1
        return f"{self.prefix}__lowered{self.count}"

    def const(self, value: float) -> str:
        name = self.name()
        array = np.array(value, dtype=np_dtype(dtype_from_onnx(self.dtype)))
        self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name)))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.name()
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.name(), **attrs))
        return output


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _used_outputs(node: onnx.NodeProto) -> list[int]:
    return [i for i, o in enumerate(node.output) if o]


def _erf_gelu(b: _Builder, x: str, output: str) -> None:
    scaled = b.op("Mul", [x, b.const(1 / math.sqrt(2))])
    one_plus = b.op("Add", [b.op("Erf", [scaled]), b.const(1.0)])
    b.op("Mul", [b.op("Mul", [x, b.const(0.5)]), one_plus], output)


def _gelu(node, prefix, dtype, version, constants=None):
    if _used_outputs(node) != [0]:
        return None
    b = _Builder(prefix, dtype)
    _erf_gelu(b, node.input[0], node.output[0])
    return b.nodes


def _bias_gelu(node, prefix, dtype, version, constants=None):
    if _used_outputs(node) != [0] or len(node.input) < 2:
        return None
    b = _Builder(prefix, dtype)
    _erf_gelu(b, b.op("Add", [node.input[0], node.input[1]]), node.output[0])
    return b.nodes


def _fast_gelu(node, prefix, dtype, version, constants=None):
    if _used_outputs(node) != [0]:
        return None
    b = _Builder(prefix, dtype)
    y = b.op("Add", [node.input[0], node.input[1]]) if len(node.input) > 1 and node.input[1] else node.input[0]
    cube = b.op("Mul", [b.op("Mul", [y, y]), y])
    inner = b.op("Add", [y, b.op("Mul", [cube, b.const(0.044715)])])
    tanh = b.op("Tanh", [b.op("Mul", [inner, b.const(math.sqrt(2 / math.pi))])])
    b.op("Mul", [b.op("Mul", [y, b.const(0.5)]), b.op("Add", [tanh, b.const(1.0)])], node.output[0])
    return b.nodes


def _quick_gelu(node, prefix, dtype, version, constants=None):
    if _used_outputs(node) != [0]:
        return None
    b = _Builder(prefix, dtype)
    alpha = float(_attr(node, "alpha", 1.702))
    x = node.input[0]
    b.op("Mul", [x, b.op("Sigmoid", [b.op("Mul", [x, b.const(alpha)])])], node.output[0])
    return b.nodes


_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _fused_conv(node, prefix, dtype, version, constants=None):
    activation = _attr(node, "activation", b"")
    activation = activation.decode() if isinstance(activation, bytes) else activation
    params = list(_attr(node, "activation_params", []) or [])
    if _used_outputs(node) != [0] or (activation and activation not in _ACTIVATIONS):
        return None
    b = _Builder(prefix, dtype)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in _CONV_ATTRS}
    if isinstance(attrs.get("auto_pad"), bytes):
        attrs["auto_pad"] = attrs["auto_pad"].decode()
    conv_inputs = [i for i in node.input[:3]]
    while conv_inputs and not conv_inputs[-1]:
        conv_inputs.pop()
    last = node.output[0]
    y = b.op("Conv", conv_inputs, None if activation or len(node.input) > 3 else last, **attrs)
    if len(node.input) > 3 and node.input[3]:
        y = b.op("Add", [y, node.input[3]], None if activation else last)
    if not activation:
        return b.nodes
    if activation == "LeakyRelu":
        b.op("LeakyRelu", [y], last, alpha=params[0] if params else 0.01)
    elif activation == "HardSigmoid":
        b.op("HardSigmoid", [y], last, alpha=params[0] if params else 0.2, beta=params[1] if len(params) > 1 else 0.5)
    elif activation == "Clip":
        low, high = (params + [-np.inf, np.inf][len(params):])[:2] if params else (-np.inf, np.inf)
        b.op("Clip", [y, b.const(low), b.const(high)], last)
    else:
        b.op(activation, [y], last)
    return b.nodes


def _skip_layer_norm(node, prefix, dtype, version, constants=None):
    used = _used_outputs(node)
    if version < 17 or any(i in (1, 2) for i in used) or len(node.input) < 3:
        return None
    b = _Builder(prefix, dtype)
    total = b.op("Add", [node.input[0], node.input[1]])
    if len(node.input) > 4 and node.input[4]:
        total = b.op("Add", [total, node.input[4]])
    if 3 in used:
        total = b.op("Identity", [total], node.output[3])
    inputs = [total, node.input[2]] + ([node.input[3]] if len(node.input) > 3 and node.input[3] else [])
    if 0 in used:
        b.op("LayerNormalization", inputs, node.output[0], axis=-1, epsilon=float(_attr(node, "epsilon", 1e-12)))
    return b.nodes


def _matmul_nbits(node, prefix, dtype, version, constants=None):
    """Weight-only quantized MatMul with constant weights: dequantize once, here, to a plain MatMul."""
    constants = constants or {}
    bits, block = int(_attr(node, "bits", 4)), int(_attr(node, "block_size", 0))
    k, n = int(_attr(node, "K", 0)), int(_attr(node, "N", 0))
    names = list(node.input) + [""] * (6 - len(node.input))
    if (_used_outputs(node) != [0] or bits not in (4, 8) or block <= 0 or any(names[4:6])
            or any(name not in constants for name in names[1:3]) or (names[3] and names[3] not in constants)):
        return None
    packed = numpy_helper.to_array(constants[names[1]])
    if packed.dtype != np.uint8:
        return None
    blocks = -(-k // block)
    if bits == 4:   # two values a byte, the low nibble first
        values = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, blocks, -1)[..., :block]
    else:
        values = packed.reshape(n, blocks, -1)[..., :block]
    scales = numpy_helper.to_array(constants[names[2]]).astype(np.float64).reshape(n, blocks)
    if names[3]:
        zero = numpy_helper.to_array(constants[names[3]])
        if zero.dtype != np.uint8:
            return None   # float zero points: a different formula, left to onnxruntime
        if bits == 4:
            zero = np.stack([zero & 0x0F, zero >> 4], axis=-1).reshape(n, -1)[:, :blocks]
        zero = zero.reshape(n, blocks).astype(np.float64)
    else:
        zero = np.full((n, blocks), 2 ** (bits - 1), np.float64)
    weight = (values.astype(np.float64) - zero[..., None]) * scales[..., None]
    weight = weight.reshape(n, blocks * block)[:, :k].T.astype(np_dtype(dtype_from_onnx(dtype)))
    b = _Builder(prefix, dtype)
    name = b.name()
    b.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(weight, name)))
    b.op("MatMul", [node.input[0], name], node.output[0])
    return b.nodes


_RULES = {"Gelu": _gelu, "BiasGelu": _bias_gelu, "FastGelu": _fast_gelu, "QuickGelu": _quick_gelu,
          "FusedConv": _fused_conv, "SkipLayerNormalization": _skip_layer_norm, "MatMulNBits": _matmul_nbits}
