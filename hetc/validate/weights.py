"""Seeded, fan-in-scaled random weights for validation.

The onnx light models ship constant weights (0.02 everywhere), so every logit agrees and a comparison passes
almost whatever the compiler does. ``randomize_weights`` replaces a model's float initializers with seeded
random values scaled by the fan-in of the node that reads them (He for weights feeding a Relu-style network,
LeCun-like otherwise: std = sqrt(2 / fan_in)), so that activations keep a unit-ish scale through the depth.
Integer tensors (shapes, axes, indices) and float parameters (a Resize's scales, a Clip's bounds) are left
alone. BatchNormalization gets a scale ~1 and a small bias, and the mean and variance its input has on a seeded
random input (``hetc.validate.calibrate``), so that it normalises as a trained one does.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from hetc.target.ops import PARAMETER_INPUTS
from hetc.validate.calibrate import calibrate_batch_norms

WEIGHT_CHOICES = ("model", "random")  # keep the model's weights, or randomize_weights()
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
# op -> index of its weight input and how to get the fan-in from the weight's shape
_WEIGHT_FAN_IN = {
    "Conv": (1, lambda s: int(np.prod(s[1:])) if len(s) > 1 else 1),
    "ConvTranspose": (1, lambda s: int(s[0] * np.prod(s[2:])) if len(s) > 1 else 1),
    "Gemm": (1, None),  # depends on transB
    "MatMul": (1, lambda s: int(s[-2]) if len(s) >= 2 else int(s[0]) if s else 1),
}
_BN_ROLES = {1: "scale", 2: "bias", 3: "mean", 4: "var"}
# Float inputs that are semantics, not weights (a Resize's scales, a Clip's bounds): kept as the model has them.
_PARAMETERS = {**PARAMETER_INPUTS, "Upsample": frozenset({1}), "Clip": frozenset({1, 2}),
               "Range": frozenset({0, 1, 2}), "ConstantOfShape": frozenset({0})}


def _roles(graph: onnx.GraphProto) -> dict[str, tuple[str, int]]:
    """Initializer name -> (role, fan_in) from the first node that reads it."""
    roles: dict[str, tuple[str, int]] = {}
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    source = _reshaped_constants(graph, shapes)   # a reshaped weight's name -> the initializer it reshapes
    for node in graph.node:
        ins = [source.get(i, i) for i in node.input]
        if node.op_type in _WEIGHT_FAN_IN and len(ins) > 1 and node.input[1] in source:
            shapes = {**shapes, ins[1]: shapes[node.input[1]]}   # the fan-in is read off the reshaped shape
        for index in _PARAMETERS.get(node.op_type, ()):
            if index < len(ins) and ins[index] in shapes:
                roles.setdefault(ins[index], ("parameter", 1))
        if node.op_type in _WEIGHT_FAN_IN and len(ins) > 1 and ins[1] in shapes:
            index, fan = _WEIGHT_FAN_IN[node.op_type]
            shape = shapes[ins[1]]
            if node.op_type == "Gemm":
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                fan_in = int(shape[1] if trans_b else shape[0]) if len(shape) == 2 else 1
            else:
                fan_in = fan(shape)
            roles.setdefault(ins[index], ("weight", max(fan_in, 1)))
            if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(ins) > 2 and ins[2]:
                roles.setdefault(ins[2], ("bias", 1))
        elif node.op_type == "BatchNormalization":
            for i, role in _BN_ROLES.items():
                if i < len(ins) and ins[i]:
                    roles.setdefault(ins[i], ("bn_" + role, 1))
    return roles


def _reshaped_constants(graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Outputs of a ``Reshape`` of an initializer by a constant shape (how caffe2's exporter feeds Inception-v1's
    classifier weight to its Gemm), mapped to that initializer; their shapes are added to ``shapes``."""
    source: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[0] not in shapes:
            continue
        target = next((t for t in graph.initializer if t.name == node.input[1]), None)
        if target is None:
            continue
        dims = [int(d) for d in numpy_helper.to_array(target).ravel()]
        old = shapes[node.input[0]]
        dims = [old[i] if d == 0 and i < len(old) else d for i, d in enumerate(dims)]
        try:
            shapes[node.output[0]] = np.empty(old, dtype=np.uint8).reshape(dims).shape
        except ValueError:
            continue
        source[node.output[0]] = node.input[0]
    return source


def _materialize_filled_weights(graph: onnx.GraphProto, ir_version: int) -> None:
    """Weights written as ``ConstantOfShape(constant shape)`` (how onnx's light models store theirs: every
    weight 0.02) become initializers holding the same values, so that they are randomized like the others.
    Only outputs read as a weight, bias or BatchNormalization parameter are turned; a filled tensor used for
    anything else (padding, a mask) keeps its node. Before IR 4 every initializer is also a graph input."""
    constants = {t.name: t for t in graph.initializer}
    roles = _roles(_with_filled_as_initializers(graph, constants))
    kept = []
    for node in graph.node:
        filled = _filled_value(node, constants)
        if filled is not None and roles.get(node.output[0], ("other",))[0] in _WEIGHT_ROLES:
            shape, fill = filled
            if math.prod(shape) > 1:   # randomized below from its type and shape alone: no bytes to make here
                tensor = onnx.TensorProto(name=node.output[0], dims=shape, data_type=fill.data_type)
            else:                      # a scalar is left as it is (see randomize_weights)
                tensor = numpy_helper.from_array(np.full(shape, numpy_helper.to_array(fill).ravel()[0]),
                                                 node.output[0])
            graph.initializer.append(tensor)
            if ir_version < 4:
                graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, shape))
        else:
            kept.append(node)
    if len(kept) < len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


_WEIGHT_ROLES = {"weight", "bias"} | {"bn_" + role for role in _BN_ROLES.values()}
# role -> (mean, std) of its normal draw; a weight's std is sqrt(2 / fan_in), a BatchNormalization variance is
# uniform in [0.5, 1.5)
_NORMAL = {"bias": (0.0, 0.05), "bn_bias": (0.0, 0.05), "bn_mean": (0.0, 0.05), "bn_scale": (1.0, 0.1),
           "other": (0.0, 0.1)}


def _filled_value(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]
                  ) -> tuple[tuple[int, ...], onnx.TensorProto] | None:
    """The shape and the one-element fill of the float tensor a ``ConstantOfShape`` node with a constant shape
    produces, else None."""
    if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx") or node.input[0] not in constants:
        return None
    value = next((a.t for a in node.attribute if a.name == "value"), None)
    if value is None or value.data_type not in _FLOAT_TYPES:
        return None  # the default fill is float32 zero: not a weight anyone would randomize
    return tuple(int(d) for d in numpy_helper.to_array(constants[node.input[0]]).ravel()), value


def _with_filled_as_initializers(graph: onnx.GraphProto, constants: dict[str, onnx.TensorProto]
                                 ) -> onnx.GraphProto:
    """``graph`` with a data-less initializer per filled tensor: enough for ``_roles``, which reads shapes."""
    view = onnx.GraphProto()
    view.node.extend(graph.node)
    view.initializer.extend(graph.initializer)
    for node in graph.node:
        filled = _filled_value(node, constants)
        if filled is not None:
            view.initializer.append(onnx.TensorProto(name=node.output[0], dims=filled[0],
                                                     data_type=onnx.TensorProto.FLOAT))
    return view


def randomize_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` whose float initializers are seeded random values, fan-in-scaled (see module doc).
    Deterministic for a given model and seed; integer initializers are kept as they are."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)
    _materialize_filled_weights(out.graph, out.ir_version)
    roles = _roles(out.graph)
    for tensor in out.graph.initializer:
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        shape = tuple(tensor.dims)    # the values are replaced: their type and shape are all that is read
        size = math.prod(shape)
        if size == 0:
            continue
        role, fan_in = roles.get(tensor.name, ("other", 1))
        if role == "parameter" or (size <= 1 and role not in _WEIGHT_ROLES):
            continue  # a scalar constant (epsilon, a Pow exponent, a Clip bound) is semantics, not a weight
        # Drawn in float32 where the tensor is no wider (float64 draws and a cast take 3x as long: VGG-19's
        # 143 M weights), in place, and stored as raw bytes without another copy of the model's weights.
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        draw = np.float64 if dtype == np.float64 else np.float32
        if role == "bn_var":
            new = rng.random(shape, dtype=draw)
            new += 0.5
        else:
            mean, std = _NORMAL.get(role) or (0.0, np.sqrt(2.0 / fan_in))   # (a weight: He by its fan-in)
            new = rng.standard_normal(shape, dtype=draw)
            new *= draw(std)
            new += draw(mean)
        name, data_type = tensor.name, tensor.data_type
        tensor.Clear()              # as numpy_helper.from_array makes it: name, dims, type, raw little-endian data
        tensor.name, tensor.data_type = name, data_type
        tensor.dims.extend(shape)
        tensor.raw_data = new.astype(np.dtype(dtype).newbyteorder("<"), copy=False).tobytes()
    calibrate_batch_norms(out, seed)
    return out


__all__ = ["randomize_weights", "WEIGHT_CHOICES"]
