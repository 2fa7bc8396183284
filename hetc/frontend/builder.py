"""Translation of a shape-inferred ONNX graph into IR. Shapes that inference left open are kept as tuples
holding None (or a None shape for an unknown rank) and closed by ``static_shapes`` before the graph is
handed out."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.errors import ModelError
from hetc.frontend.overrides import runtime_inputs
from hetc.ir import Graph, HostType, Node, Value, dtype_from_onnx, host_type_from_proto, tensor_host_type

# A dimension or shape the frontend has not resolved yet.
PartialShape = tuple[int | None, ...] | None


def normalise_domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def convert_attribute(attr: onnx.AttributeProto) -> Any:
    """An attribute as a plain Python value: strings decoded, tensors as numpy arrays; graphs, sparse
    tensors and type protos are kept as protos (opaque to hetc)."""
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return _decode(value)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value:
        if isinstance(value[0], bytes):
            return [_decode(v) for v in value]
        if isinstance(value[0], onnx.TensorProto):
            return [numpy_helper.to_array(v) for v in value]
    return list(value) if isinstance(value, (list, tuple)) else value


def _decode(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def tensor_type_of(name: str, type_proto: onnx.TypeProto | None) -> tuple[str | None, PartialShape]:
    """(dtype, partial shape) of a value; (None, None) when inference knows nothing about it."""
    if type_proto is None or type_proto.WhichOneof("value") is None:
        return None, None
    kind = type_proto.WhichOneof("value")
    if kind != "tensor_type":
        readable = {"sequence_type": "a sequence", "optional_type": "an optional", "map_type": "a map",
                    "sparse_tensor_type": "a sparse tensor"}.get(kind, kind)
        raise ModelError(f"unsupported value type: '{name}' is {readable}; hetc holds dense tensors, and "
                         "sequences, optionals and string tensors as host values, but not maps or sparse tensors")
    tensor = type_proto.tensor_type
    if tensor.elem_type == onnx.TensorProto.UNDEFINED:
        return None, None
    try:
        dtype = dtype_from_onnx(tensor.elem_type)
    except ValueError:
        raise ModelError(f"unsupported dtype: '{name}' has ONNX element type {tensor.elem_type}, "
                         "which hetc does not know") from None
    if not tensor.HasField("shape"):
        return dtype, None
    return dtype, tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)


def host_type_of(name: str, type_proto: onnx.TypeProto | None) -> HostType | None:
    """The host type of a sequence or optional value (checking that nothing inside is a map or a sparse
    tensor); None for a tensor or an unknown type."""
    if type_proto is None or type_proto.WhichOneof("value") not in ("sequence_type", "optional_type"):
        return None
    inner = type_proto
    while inner.WhichOneof("value") in ("sequence_type", "optional_type"):
        inner = getattr(inner, inner.WhichOneof("value")).elem_type
    if inner.WhichOneof("value") is not None:
        tensor_type_of(name, inner)   # raises for a map or a sparse tensor inside
    return host_type_from_proto(type_proto)


def set_type(value: Value, type_proto: onnx.TypeProto | None) -> None:
    """Give ``value`` what ``type_proto`` (from shape inference) says: a host type for a sequence or an
    optional, else the dtype (when still unset) and the partial shape (when known); a string tensor, or a
    tensor already held by the host, gets its host type in step with that shape."""
    host = host_type_of(value.name, type_proto)
    if host is not None:
        value.host, value.dtype, value.shape = host, host.element_dtype or "", ()
        return
    dtype, shape = tensor_type_of(value.name, type_proto)
    value.dtype = value.dtype or dtype
    if shape is not None:
        value.shape = shape
    if value.dtype == "string" or (value.host is not None and value.host.kind == "tensor"):
        value.host = tensor_host_type(value.dtype, value.shape)   # kept in step with the partial shape


def type_proto_of(value: Value) -> onnx.TypeProto:
    """The ONNX type of a value while its shape may still be partial (dims None, shape None: unknown rank)."""
    if value.host is not None and value.host.kind != "tensor":
        return value.host.to_type_proto()
    return tensor_host_type(value.dtype, value.shape).to_type_proto()


def build_graph(model: onnx.ModelProto, initializers: Sequence[onnx.TensorProto] | None = None) -> Graph:
    """IR for ``model``, whose initializers must already be out of its input list and whose values
    carry inferred types; ``initializers`` replace its own (the weights of a model inferred without them).
    Node ids follow the ONNX order (the checker made it topological)."""
    proto = model.graph
    if len(proto.sparse_initializer):
        raise ModelError("unsupported initializer: the model has sparse initializers; densify them "
                         "(e.g. with onnx.numpy_helper) and re-save the model")
    types: dict[str, onnx.TypeProto] = {}
    for info in list(proto.input) + list(proto.value_info) + list(proto.output):
        types[info.name] = info.type
    values: dict[str, Value] = {}
    string_constants: list[Node] = []
    for tensor in proto.initializer if initializers is None else initializers:
        dtype, _ = tensor_type_of(tensor.name, helper.make_tensor_type_proto(tensor.data_type, None))
        array = _array_of(tensor)
        if dtype == "string":
            # A string tensor has no byte layout, so it cannot sit in the constants image: it is a host value
            # a Constant node on the CPU makes at run time.
            value = Value(tensor.name, dtype, tuple(array.shape), host=tensor_host_type(dtype, array.shape))
            values[tensor.name] = value
            string_constants.append(Node(id=len(proto.node) + len(string_constants), op_type="Constant",
                                         name=f"{tensor.name}_constant", inputs=[], outputs=[value],
                                         attrs={"value": array}))
            continue
        values[tensor.name] = Value(tensor.name, dtype, tuple(array.shape), const=array)
    inputs = []
    for info in runtime_inputs(proto):
        values[info.name] = _new_value(info.name, types)
        inputs.append(values[info.name])
    nodes = []
    for index, node_proto in enumerate(proto.node):
        node_inputs = [values[name] if name else None for name in node_proto.input]
        node_outputs = []
        for name in node_proto.output:
            values[name] = _new_value(name, types)
            node_outputs.append(values[name])
        nodes.append(Node(id=index, op_type=node_proto.op_type, name=node_proto.name, inputs=node_inputs,
                          outputs=node_outputs, attrs={a.name: convert_attribute(a) for a in node_proto.attribute},
                          domain=normalise_domain(node_proto.domain)))
    nodes = string_constants + nodes
    outputs = [values[info.name] for info in proto.output]
    opset = {normalise_domain(o.domain): o.version for o in model.opset_import}
    metadata = {p.key: p.value for p in model.metadata_props}
    if model.producer_name:
        metadata.setdefault("producer", f"{model.producer_name} {model.producer_version}".strip())
    # Not Graph.build: its fresh value table would lose constants that only a subgraph reads.
    graph = Graph(name=proto.name, nodes=nodes, inputs=inputs, outputs=outputs, values=values, opset=opset,
                  metadata=metadata)
    graph.relink()
    return graph


def _array_of(tensor: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(tensor)
    except ValueError as error:   # raw bytes that do not fill the shape (the checker saw the tensor without them)
        raise ModelError(f"initializer '{tensor.name}' does not hold the {list(tensor.dims)} elements its shape "
                         f"declares ({error}); fix or re-export the model") from error


def _new_value(name: str, types: dict[str, onnx.TypeProto]) -> Value:
    value = Value(name, None, None)  # type: ignore[arg-type] - closed by static_shapes
    set_type(value, types.get(name))
    return value


def is_static(value: Value) -> bool:
    """Whether the value's type is closed: a sequence or an optional always is (its elements' shapes are a
    run-time matter), a tensor when its dtype and every dim are known."""
    if value.host is not None and value.host.kind != "tensor":
        return True
    return value.dtype is not None and value.shape is not None and all(
        isinstance(d, (int, np.integer)) and d >= 0 for d in value.shape)
