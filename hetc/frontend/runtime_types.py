"""Types and shapes from onnxruntime, for nodes ONNX shape inference cannot type.

Contrib operators (``com.microsoft``: FusedConv, Gelu, BiasGelu, SkipLayerNormalization, QuickGelu,
MatMulNBits...) and custom domains onnxruntime registers have no ONNX schema, so ONNX leaves their outputs
untyped; and an exporter may declare an output of such an operator (or of any non-ONNX domain's, e.g.
DynamicQuantizeLSTM's ['', 2, 1, 512] for a static [16, 1, 512] input) with dims open, which inference
then leaves open. onnxruntime runs them, so it knows: the node alone, in a one-node model whose inputs have the
static shapes the graph already has (the compile-time constants among them as initializers, random data for
the rest), is run twice on different data; each output's dtype and shape must agree between the runs (a shape
that follows the data is not static, and this does not guess one). The CPU then runs the node through
onnxruntime like any other operator without a hetc kernel.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.ir import Node
from hetc.ir.dtypes import dtype_from_numpy, dtype_to_onnx, np_dtype
from hetc.ir.onnx_export import make_attribute


class RuntimeTypingError(Exception):
    """onnxruntime could not type the node; the message says why (for the user's ShapeError)."""


def runtime_output_types(node: Node, opsets: Mapping[str, int], constants: Mapping[str, np.ndarray],
                         ir_version: int) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of every output of ``node``, from running it in onnxruntime. Every input must be a
    tensor of static shape (``constants`` gives the compile-time values of some of them)."""
    import onnxruntime as ort

    inputs, initializers = [], []
    names = [v.name if v is not None else "" for v in node.inputs]
    for value in node.present_inputs:
        if value.host is not None or value.dtype is None or value.shape is None or None in value.shape:
            raise RuntimeTypingError(f"input '{value.name}' has no static type to run the node on")
        if value.name in constants and np.asarray(constants[value.name]).dtype != object:
            initializers.append(numpy_helper.from_array(np.asarray(constants[value.name]), value.name))
        else:
            inputs.append(helper.make_tensor_value_info(value.name, dtype_to_onnx(value.dtype), list(value.shape)))
    proto = helper.make_node(node.op_type, names, [v.name for v in node.outputs], domain=node.domain or None)
    proto.attribute.extend(make_attribute(k, a) for k, a in node.attrs.items())
    outputs = [helper.make_value_info(v.name, onnx.TypeProto()) for v in node.outputs]
    graph = helper.make_graph([proto], "runtime_types", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        runs = [session.run(None, _feeds(graph.input, seed)) for seed in (0, 1)]
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise RuntimeTypingError(f"onnxruntime cannot run it either: {_first_line(error)}") from None
    types = []
    for value, first, second in zip(node.outputs, *runs):
        first, second = np.asarray(first), np.asarray(second)
        if first.shape != second.shape:
            raise RuntimeTypingError(f"its output '{value.name}' changes shape with the data "
                                     f"({first.shape} and {second.shape})")
        types.append((dtype_from_numpy(first.dtype), tuple(int(d) for d in first.shape)))
    return types


def _feeds(inputs, seed: int) -> dict[str, np.ndarray]:
    """Random data of each input's type: floats N(0, 1), integers in [0, 2] (safe as indices), bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in inputs:
        tensor = info.type.tensor_type
        shape = tuple(d.dim_value for d in tensor.shape.dim)
        dtype = np_dtype(_ir_dtype(tensor.elem_type))
        if dtype == np.bool_:
            feeds[info.name] = rng.integers(0, 2, shape).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            feeds[info.name] = rng.integers(0, 3, shape).astype(dtype)
        else:
            feeds[info.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _ir_dtype(elem_type: int) -> str:
    from hetc.ir.dtypes import dtype_from_onnx

    return dtype_from_onnx(elem_type)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
