"""Batch-normalisation statistics for random weights.

A trained network's BatchNormalization holds the mean and variance of the activations it sees, so each one
hands the next layer values of unit scale. Random statistics do not: through ResNet-50's 16 residual blocks
the activations grow until the logits reach about 10^4 (ShuffleNet's 10^5), the final Softmax is exactly one-hot,
and comparing its output with onnxruntime's proves nothing. ``calibrate_batch_norms`` measures them instead:
one onnxruntime run of the model in which every BatchNormalization normalises by the statistics of its own
input on a seeded random input (as in training), each layer seeing the ones before it normalised; those
statistics become its mean and variance.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.frontend.inference import infer_shapes
from hetc.ir import FLOAT_DTYPES
from hetc.validate.inputs import input_specs, make_inputs

# A channel's statistics need several values: a [N, C] input of one sample would get a variance of 0.
MIN_VALUES_PER_CHANNEL = 16


def calibrate_batch_norms(model: onnx.ModelProto, seed: int = 0) -> None:
    """Set ``model``'s BatchNormalization means and variances, in place, to those of their inputs on seeded
    random inputs (``make_inputs(model, seed)``). A node is left as it is when its statistics are not
    initializers of its own, it runs in training mode or not per channel, its input's shape is not known, or
    a channel has fewer than ``MIN_VALUES_PER_CHANNEL`` values; the whole model when an input is not a float
    tensor of static shape, or (with a warning) when onnxruntime cannot run it."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 7 or not all(spec.host is None and spec.dtype in FLOAT_DTYPES and None not in spec.shape
                            for spec in input_specs(model)):
        return
    shapes = _shapes(model)
    ranks = {node.output[0]: len(shapes[node.input[0]]) for node in _eligible(model) if node.input[0] in shapes
             and math.prod(shapes[node.input[0]]) // shapes[node.input[0]][1] >= MIN_VALUES_PER_CHANNEL}
    if not ranks:
        return
    probe, stats = _probe(model, ranks, opset)
    from hetc.validate.reference import _session   # onnxruntime only when there is something to measure

    names = [name for pair in stats.values() for name in pair]
    try:
        values = dict(zip(names, _session(probe).run(names, make_inputs(model, seed))))
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types; the reference may not need it
        # A model onnxruntime cannot run is validated against onnx.reference: it keeps its drawn statistics.
        warnings.warn(f"BatchNormalization statistics left as drawn (onnxruntime cannot run the model to measure "
                      f"them: {str(error).splitlines()[0][:200]}); validating a deep network against them "
                      f"may compare saturated outputs", RuntimeWarning, stacklevel=3)
        return
    index = {t.name: i for i, t in enumerate(model.graph.initializer)}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and node.output[0] in stats:
            for name, measured in zip((node.input[3], node.input[4]), stats[node.output[0]]):
                tensor = model.graph.initializer[index[name]]
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
                tensor.CopyFrom(numpy_helper.from_array(values[measured].ravel().astype(dtype), name))


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of the model's float32 values, from onnx's shape inference (only those fully known)."""
    inferred = infer_shapes(model, strict=False)
    shapes = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if (info.type.WhichOneof("value") == "tensor_type" and info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
                and dims and all(d.HasField("dim_value") for d in dims)):
            shapes[info.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _eligible(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """BatchNormalization nodes in inference mode, per channel, whose mean and variance are initializers no
    other node reads."""
    initializers = {t.name for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    found = []
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx") or len(node.input) < 5:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("training_mode", 0) or not attrs.get("spatial", 1) or len(node.output) > 1:
            continue
        if all(node.input[i] in initializers and readers[node.input[i]] == 1 for i in (3, 4)):
            found.append(node)
    return found


def _probe(model: onnx.ModelProto, ranks: dict[str, int], opset: int
           ) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """A copy of the model with each chosen node (by output name, with its input's rank) replaced by a
    normalisation by its input's own statistics (as in training), which become graph outputs: (mean,
    variance) names by the node's output name."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph = probe.graph
    del graph.node[:]
    stats: dict[str, tuple[str, str]] = {}
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or node.output[0] not in ranks:
            graph.node.append(node)
            continue
        rank = ranks[node.output[0]]
        y, (x, scale, bias) = node.output[0], node.input[:3]
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        n = {k: f"{y}__calib_{k}" for k in ("mean", "var", "axes", "centred", "sq", "eps", "spread", "std",
                                              "normed", "kept", "scale", "bias", "scaled")}
        axes = [0, *range(2, rank)]
        graph.initializer.extend([numpy_helper.from_array(np.array(eps, np.float32), n["eps"]),
                                  numpy_helper.from_array(np.array([-1] + [1] * (rank - 2), np.int64), n["kept"])])
        if opset >= 18:
            graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), n["axes"]))
        graph.node.extend([
            _reduce_mean(x, axes, n, "mean", opset),
            helper.make_node("Sub", [x, n["mean"]], [n["centred"]]),
            helper.make_node("Mul", [n["centred"], n["centred"]], [n["sq"]]),
            _reduce_mean(n["sq"], axes, n, "var", opset),
            helper.make_node("Add", [n["var"], n["eps"]], [n["spread"]]),
            helper.make_node("Sqrt", [n["spread"]], [n["std"]]),
            helper.make_node("Div", [n["centred"], n["std"]], [n["normed"]]),
            helper.make_node("Reshape", [scale, n["kept"]], [n["scale"]]),
            helper.make_node("Reshape", [bias, n["kept"]], [n["bias"]]),
            helper.make_node("Mul", [n["normed"], n["scale"]], [n["scaled"]]),
            helper.make_node("Add", [n["scaled"], n["bias"]], [y]),
        ])
        stats[y] = (n["mean"], n["var"])
        graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in stats[y])
    return probe, stats


def _reduce_mean(x: str, axes: list[int], names: dict[str, str], out: str, opset: int) -> onnx.NodeProto:
    """ReduceMean over ``axes``, keeping them: an attribute before opset 18, an input from it."""
    if opset >= 18:
        return helper.make_node("ReduceMean", [x, names["axes"]], [names[out]], keepdims=1)
    return helper.make_node("ReduceMean", [x], [names[out]], axes=axes, keepdims=1)
