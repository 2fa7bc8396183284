"""PRelu's slope across the opset-7 change of its definition.

Up to opset 6 the slope is "of size 1, shared across channels", or else one value per channel (axis 1 of
X, as Caffe2 and PyTorch's PReLU define it). From opset 7 the slope broadcasts unidirectionally to X
(numpy rules, aligned on the trailing axes), so a per-channel slope of shape (C,) must become (C, 1, ..., 1).
onnx's version converter only restamps the node, which turns a valid opset-6 model into an invalid opset-7
one; ``per_channel_slopes`` reshapes such slopes before the conversion, and ``check_slopes`` rejects an
opset-7+ slope that does not broadcast instead of letting a kernel fail at run time.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.errors import ShapeError
from hetc.frontend.opsets import DEFAULT_DOMAINS
from hetc.ir import Graph

_BROADCASTING_SINCE = 7


def per_channel_slopes(model: onnx.ModelProto) -> None:
    """In an opset < 7 model, give each per-channel PRelu slope (1-D, C > 1 elements, X of rank > 2 with C
    channels) the shape (C, 1, ..., 1) that means the same under unidirectional broadcasting. In place."""
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions or max(versions) >= _BROADCASTING_SINCE:
        return
    graph = model.graph
    prelus = [n for n in graph.node if n.op_type == "PRelu" and n.domain in DEFAULT_DOMAINS and len(n.input) == 2]
    if not prelus:
        return
    shapes = _inferred_shapes(model)
    initializers = {t.name: t for t in graph.initializer}
    taken = {name for n in graph.node for name in list(n.input) + list(n.output)} | set(initializers)
    for node in prelus:
        x_shape, slope_shape = shapes.get(node.input[0]), shapes.get(node.input[1])
        if x_shape is None or slope_shape is None or len(x_shape) <= 2 or len(slope_shape) != 1:
            continue
        channels, size = x_shape[1], slope_shape[0]
        if size in (None, 1) or channels not in (None, size):
            continue  # not one value per channel: left to broadcast as it is (check_slopes judges it)
        name = _fresh(f"{node.input[1]}_per_channel", taken)
        trailing = len(x_shape) - 2
        if node.input[1] in initializers:
            _replace_initializer(graph, node, initializers[node.input[1]], name, (size,) + (1,) * trailing)
        else:  # Unsqueeze-1 (axes as an attribute), which the version converter carries forward
            position = list(graph.node).index(node)
            graph.node.insert(position, helper.make_node("Unsqueeze", [node.input[1]], [name],
                                                         axes=list(range(1, trailing + 1))))
        node.input[1] = name


def _replace_initializer(graph: onnx.GraphProto, node: onnx.NodeProto, old: onnx.TensorProto, name: str,
                         shape: tuple[int, ...]) -> None:
    """A reshaped copy of initializer ``old`` named ``name``; ``old`` goes when nothing else reads it. (IR < 4
    lists initializers among the graph inputs: the copy is listed too.)"""
    graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(old).reshape(shape), name))
    if any(i.name == old.name for i in graph.input):
        graph.input.append(helper.make_tensor_value_info(name, old.data_type, list(shape)))
    if sum(list(n.input).count(old.name) for n in graph.node) == 1 and old.name not in {o.name for o in graph.output}:
        graph.initializer.remove(old)
        for info in [i for i in graph.input if i.name == old.name]:
            graph.input.remove(info)


def check_slopes(graph: Graph) -> None:
    """Every PRelu slope broadcasts unidirectionally to X (opset 7 and later), or a ShapeError."""
    for node in graph.nodes:
        if node.op_type != "PRelu" or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        x, slope = node.inputs[0].shape, node.inputs[1].shape
        try:
            fits = np.broadcast_shapes(x, slope) == tuple(x)
        except ValueError:
            fits = False
        if not fits:
            hint = ""
            if len(slope) == 1 and len(x) > 2 and slope[0] == x[1]:
                hint = f"; for one slope per channel give it shape {_dims((slope[0],) + (1,) * (len(x) - 2))}"
            raise ShapeError(f"PRelu '{node.name}': the slope of shape {_dims(slope)} does not broadcast "
                             f"unidirectionally to X of shape {_dims(x)} (numpy rules, trailing axes aligned, "
                             f"as ONNX requires since opset 7){hint}")


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Value name -> shape (None for an unknown dim), as far as onnx's lenient inference gets."""
    try:
        typed = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - best effort: the strict inference after conversion reports errors
        typed = model
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for info in list(typed.graph.input) + list(typed.graph.value_info) + list(typed.graph.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes.setdefault(info.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                               for d in tensor.shape.dim))
    return shapes


def _fresh(base: str, taken: set[str]) -> str:
    name, index = base, 0
    while name in taken:
        index += 1
        name = f"{base}_{index}"
    taken.add(name)
    return name


def _dims(shape: tuple) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
