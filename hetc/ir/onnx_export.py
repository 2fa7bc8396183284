"""Export of a Graph back to an ONNX ModelProto, used to run a transformed graph in onnxruntime
(tests of the passes, the reference of the validator)."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.ir.dtypes import dtype_to_onnx, np_dtype
from hetc.ir.graph import Graph, Node, Value

# onnxruntime 1.31 refuses the IR version onnx 1.23 writes by default; 9 is accepted by every runtime we use.
EXPORT_IR_VERSION = 9


def value_info(v: Value) -> onnx.ValueInfoProto:
    if v.host is not None:
        return v.host.value_info(v.name)
    return helper.make_tensor_value_info(v.name, dtype_to_onnx(v.dtype), list(v.shape))


def const_tensor(v: Value) -> onnx.TensorProto:
    array = np.asarray(v.const)
    if v.dtype != "string" and array.dtype != np_dtype(v.dtype):
        array = array.astype(np_dtype(v.dtype))
    return numpy_helper.from_array(array, name=v.name)


def make_attribute(name: str, value: Any) -> onnx.AttributeProto:
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value))
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        return helper.make_attribute(name, [numpy_helper.from_array(a) for a in value])
    if isinstance(value, list) and not value:
        attr = onnx.AttributeProto(name=name, type=onnx.AttributeProto.INTS)
        return attr
    return helper.make_attribute(name, value)


def to_onnx(graph: Graph, ir_version: int = EXPORT_IR_VERSION) -> onnx.ModelProto:
    """An ONNX model computing the same function as ``graph``: constants become initializers."""
    from hetc.ir.fused import epilogue_onnx, is_fused   # (fused imports this module)
    from hetc.ir.tiles import is_alias

    default_opset = graph.opset.get("", graph.opset.get("ai.onnx", 1))
    nodes: list[onnx.NodeProto] = []
    fused_constants: list[onnx.TensorProto] = []
    for n in graph.nodes:
        name = n.name or f"{n.op_type}_{n.id}"
        input_names = [v.name if v is not None else "" for v in n.inputs]
        if is_fused(n):   # written back as the original nodes, which every ONNX runtime knows
            specs = [None if v is None else (v.dtype, v.shape) for v in n.inputs]
            expanded, constants = epilogue_onnx(n.op_type, n.attrs, input_names, n.outputs[0].name,
                                                n.outputs[0].dtype, default_opset, name, specs)
            nodes += expanded
            fused_constants += constants
            continue
        if is_alias(n):   # Region -> Slice, Assemble -> Concat
            proto, constants = _alias_onnx(n, name, input_names, default_opset)
            nodes.append(proto)
            fused_constants += constants
            continue
        proto = helper.make_node(n.op_type, input_names, [v.name for v in n.outputs], name=name,
                                 domain=n.domain or None)
        proto.attribute.extend(make_attribute(k, a) for k, a in sorted(n.attrs.items()))
        nodes.append(proto)
    graph_inputs = {v.name for v in graph.inputs}
    initializers = [const_tensor(v) for v in graph.values.values()
                    if v.is_const and v.name not in graph_inputs]
    inner = {v.name for n in graph.nodes for v in n.outputs} - {v.name for v in graph.outputs}
    g = helper.make_graph(
        nodes, graph.name or "hetc",
        [value_info(v) for v in graph.inputs],
        [value_info(v) for v in graph.outputs],
        initializer=initializers + fused_constants,
        value_info=[value_info(graph.values[name]) for name in sorted(inner)],
    )
    opsets = [helper.make_opsetid(domain, version) for domain, version in sorted(graph.opset.items())]
    model = helper.make_model(g, opset_imports=opsets, producer_name="hetc")
    model.ir_version = ir_version
    return model


def _alias_onnx(n: "Node", name: str, input_names: list[str],
                opset: int) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    from hetc.ir.tiles import REGION, region_bounds

    out = n.outputs[0].name
    if n.op_type != REGION:
        return helper.make_node("Concat", input_names, [out], name=name, axis=int(n.attrs["axis"])), []
    starts, ends = region_bounds(n)
    if opset < 10:   # Slice-1 takes its bounds as attributes
        return helper.make_node("Slice", [input_names[0]], [out], name=name, starts=list(starts), ends=list(ends),
                                axes=list(range(len(starts)))), []
    constants = [numpy_helper.from_array(np.asarray(a, dtype=np.int64), name=f"{name}_{k}")
                 for k, a in (("starts", starts), ("ends", ends), ("axes", list(range(len(starts)))))]
    return helper.make_node("Slice", [input_names[0], *(c.name for c in constants)], [out], name=name), constants
