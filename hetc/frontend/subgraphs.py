"""If/Loop/Scan nodes whose outputs ONNX's whole-model shape inference left open.

Two exact remedies, tried by ``static_shapes`` once the frontend has folded what it can:

- an If whose condition is known at compile time is replaced by the branch it takes (``inline_branch`` on
  the ONNX graph, which is then imported again): the branch's nodes become plain nodes that inference and
  folding see through, and the branch not taken (which need not even be valid for these shapes, e.g. the 3-D
  path of an expanded AffineGrid given a 2-D size) is gone;
- otherwise, once the node's inputs and the outer values its bodies read are static, the node alone is
  inferred again with those types, the constant ones given as data (``infer_subgraph_outputs``): whole-model
  inference ran before the frontend folded the constants (initial states, Unsqueeze axes...) that fix the
  body's shapes.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.frontend.builder import type_proto_of
from hetc.ir import Node, Value, dtype_to_onnx, tensor_host_type
from hetc.ir.onnx_export import make_attribute


class ConstantBranch(Exception):
    """Signal from shape resolution to the importer: node ``index`` of the ONNX graph is an If whose
    condition is constant; inline ``branch`` ("then_branch" or "else_branch") and import again."""

    def __init__(self, index: int, branch: str) -> None:
        super().__init__(f"If node #{index} always takes its {branch}")
        self.index = index
        self.branch = branch


def infer_subgraph_outputs(node: Node, outer: dict[str, Value], constants: dict[str, np.ndarray],
                           opset: dict[str, int], ir_version: int) -> dict[str, onnx.TypeProto]:
    """The output types ONNX infers for ``node`` alone, given static types for its inputs and captured
    outer values (``outer``, by name) and the data of those in ``constants``; {} if some type is unknown
    or inference fails (the caller then reports the unresolved output)."""
    explicit = [v.name for v in node.present_inputs]
    # Captured constants go into the bodies as initializers: ONNX infers a body with the outer scope's
    # types but not its data, and e.g. an Unsqueeze in the body needs its axes as data.
    captured = {name: np.asarray(constants[name]) for name in node.outer_scope_names()
                if name in constants and name not in explicit}
    inputs, initializers = [], []
    for name in dict.fromkeys(explicit + node.outer_scope_names()):
        if name in captured:
            continue
        if name in constants:
            initializers.append(numpy_helper.from_array(np.asarray(constants[name]), name))
            continue
        value = outer.get(name)
        if value is not None and value.host is not None:
            inputs.append(helper.make_value_info(name, type_proto_of(value)))
            continue
        if value is None or value.dtype is None or value.shape is None or None in value.shape:
            return {}
        inputs.append(helper.make_tensor_value_info(name, dtype_to_onnx(value.dtype), list(value.shape)))
    proto = helper.make_node(node.op_type, [v.name if v is not None else "" for v in node.inputs],
                             [v.name for v in node.outputs], domain=node.domain or None)
    proto.attribute.extend(make_attribute(k, embed_constants(a, captured)) for k, a in node.attrs.items())
    outputs = [helper.make_empty_tensor_value_info(v.name) for v in node.outputs]
    model = helper.make_model(helper.make_graph([proto], "subgraph_node", inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in opset.items()])
    model.ir_version = ir_version
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception:  # noqa: BLE001 - InferenceError and friends: the output stays unresolved
        return {}
    return {info.name: info.type for info in list(inferred.graph.output) + list(inferred.graph.value_info)}


# Captured constants up to this many elements are embedded into bodies: axes, scalars, small shape tensors.
# Larger ones (weights) stay outer values, whose bytes the memory plan accounts for.
MAX_EMBEDDED_ELEMENTS = 1024
CAPTURED_SUFFIX = "__captured"


def embed_constants(attribute: object, constants: dict[str, np.ndarray]) -> object:
    """A graph attribute (or list of them) reading ``constants`` from its own initializers, renamed with
    CAPTURED_SUFFIX (a body may not shadow an outer name), instead of from the outer scope; others unchanged.
    The one-node CPU session of If/Loop/Scan has no outer scope, and ONNX infers a body with the outer
    types but not the outer data (which e.g. an Unsqueeze's axes in the body need)."""
    if isinstance(attribute, list):
        return [embed_constants(a, constants) for a in attribute]
    if not isinstance(attribute, onnx.GraphProto) or not constants:
        return attribute
    body = onnx.GraphProto()
    body.CopyFrom(attribute)
    rename = {name: name + CAPTURED_SUFFIX for name in constants}
    for node in body.node:
        _rename(node, rename)
    for info in body.output:
        info.name = rename.get(info.name, info.name)
    body.initializer.extend(numpy_helper.from_array(np.asarray(a), rename[n]) for n, a in constants.items())
    return body


def inline_branch(graph: onnx.GraphProto, index: int, branch_name: str) -> None:
    """Replace If node ``index`` of ``graph`` by the nodes of its ``branch_name``, in place."""
    node = graph.node[index]
    branch = next(a.g for a in node.attribute if a.name == branch_name)
    prefix = f"{node.name or node.op_type}_{index}/"
    produced = [name for n in branch.node for name in n.output if name]
    constants = [t.name for t in branch.initializer] + [t.values.name for t in branch.sparse_initializer]
    rename = {name: prefix + name for name in produced + constants}
    # A branch output produced inside the branch takes the If output's name; any other (an outer value, a
    # branch initializer, or one value listed twice) is copied to it by an Identity.
    copies = []
    for info, target in zip(branch.output, node.output):
        if not target:
            continue
        if info.name in produced and rename[info.name].startswith(prefix):
            rename[info.name] = target
        else:
            copies.append(helper.make_node("Identity", [rename.get(info.name, info.name)], [target],
                                           name=f"{prefix}{target}_copy"))
    body = [onnx.NodeProto() for _ in branch.node]
    for copy, original in zip(body, branch.node):
        copy.CopyFrom(original)
        _rename(copy, rename)
        copy.name = prefix + (original.name or original.op_type)
    for tensor in branch.initializer:
        renamed = graph.initializer.add()
        renamed.CopyFrom(tensor)
        renamed.name = rename[tensor.name]
    for sparse in branch.sparse_initializer:
        moved = graph.sparse_initializer.add()
        moved.CopyFrom(sparse)
        moved.values.name = rename[sparse.values.name]
    rest = list(graph.node[index + 1:])
    del graph.node[index:]
    graph.node.extend(body + copies + rest)
    return True


def _rename(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    """Rename the node's inputs and outputs, and the references of nested bodies to renamed values (ONNX
    forbids shadowing, so a nested body cannot define a name the branch defines)."""
    node.input[:] = [rename.get(n, n) for n in node.input]
    node.output[:] = [rename.get(n, n) for n in node.output]
    for attr in node.attribute:
        for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            for inner in body.node:
                _rename(inner, rename)
            for info in body.output:
                info.name = rename.get(info.name, info.name)


CARRIED_SUFFIX = "__carried"


def carry_captured_values(node: Node, values: dict[str, Value]) -> bool:
    """Make the outer values a Loop body reads without listing them (captures that are not small constants:
    those ``embed_constants`` moved in) explicit, as extra loop-carried values the body passes through
    unchanged: the CPU runs a Loop as one node, in a session that has no outer scope. The Loop gains one
    input and one (unused) output per captured value; its results are unchanged. True if it changed."""
    if node.op_type != "Loop" or node.domain != "" or "body" not in node.attrs:
        return False
    captured = [name for name in node.outer_scope_names() if name in values]
    if not captured:
        return False
    body = onnx.GraphProto()
    body.CopyFrom(node.attrs["body"])
    carried = len(node.inputs) - 2            # loop-carried values before this rewrite
    rename = {name: f"{name}{CARRIED_SUFFIX}" for name in captured}
    for inner in body.node:
        _rename(inner, rename)
    for info in body.output:
        info.name = rename.get(info.name, info.name)
    new_inputs = [helper.make_value_info(rename[name], type_proto_of(values[name])) for name in captured]
    passes = [helper.make_node("Identity", [rename[name]], [f"{rename[name]}_out"], name=f"{rename[name]}_pass")
              for name in captured]
    new_outputs = [helper.make_value_info(f"{rename[name]}_out", type_proto_of(values[name])) for name in captured]
    body_inputs, body_outputs = list(body.input), list(body.output)
    del body.input[:], body.output[:]
    body.input.extend(body_inputs + new_inputs)
    body.output.extend(body_outputs[:1 + carried] + new_outputs + body_outputs[1 + carried:])
    body.node.extend(passes)
    node.attrs = {**node.attrs, "body": body}
    node.inputs = node.inputs + [values[name] for name in captured]
    finals = [Value(f"{node.name or 'Loop'}_{name}{CARRIED_SUFFIX}", values[name].dtype, tuple(values[name].shape),
                    host=values[name].host) for name in captured]
    node.outputs = node.outputs[:carried] + finals + node.outputs[carried:]
    return True


def loop_capturing_if(node: Node, values: dict[str, Value], opset: dict[str, int]) -> list[Node] | None:
    """An If whose branches read outer values that are not small constants, as nodes the CPU can run without
    an outer scope: a one-trip Loop that carries the condition and the captured values into its body, runs the
    If there and scans its results out (each gains a leading dim of 1), then one Squeeze per result back to
    the If's outputs (the same Value objects). None when the If captures nothing or has a non-tensor output
    (a Loop scans only tensors). The caller relinks the graph."""
    if node.op_type != "If" or node.domain != "" or any(v.host is not None and v.host.kind != "tensor"
                                                        for v in node.outputs):
        return None
    captured = [name for name in node.outer_scope_names() if name in values]
    if not captured:
        return None
    prefix = node.name or f"If_{node.id}"
    rename = {name: f"{name}{CARRIED_SUFFIX}" for name in captured}
    condition = node.inputs[0]
    inner_condition = f"{prefix}__condition"
    branches = {}
    for key in ("then_branch", "else_branch"):
        branch = onnx.GraphProto()
        branch.CopyFrom(node.attrs[key])
        for inner in branch.node:
            _rename(inner, rename)
        for info in branch.output:
            info.name = rename.get(info.name, info.name)
        branches[key] = branch
    results = [f"{prefix}__result{i}" for i in range(len(node.outputs))]
    scalar_bool = helper.make_tensor_value_info(f"{prefix}__cond_in", onnx.TensorProto.BOOL, [])
    body_nodes = [helper.make_node("Identity", [scalar_bool.name], [f"{prefix}__cond_out"]),
                  helper.make_node("Identity", [inner_condition], [f"{inner_condition}_out"]),
                  helper.make_node("If", [inner_condition], results, name=prefix, **branches)]
    body_nodes += [helper.make_node("Identity", [rename[n]], [f"{rename[n]}_out"]) for n in captured]
    body = helper.make_graph(
        body_nodes, f"{prefix}__body",
        [helper.make_tensor_value_info(f"{prefix}__trip", onnx.TensorProto.INT64, []), scalar_bool,
         helper.make_value_info(inner_condition, type_proto_of(condition))]
        + [helper.make_value_info(rename[n], type_proto_of(values[n])) for n in captured],
        [helper.make_tensor_value_info(f"{prefix}__cond_out", onnx.TensorProto.BOOL, []),
         helper.make_value_info(f"{inner_condition}_out", type_proto_of(condition))]
        + [helper.make_value_info(f"{rename[n]}_out", type_proto_of(values[n])) for n in captured]
        + [helper.make_value_info(r, type_proto_of(v)) for r, v in zip(results, node.outputs)])
    trips = Value(f"{prefix}__trips", "int64", (), const=np.array(1, np.int64))
    finals = [Value(f"{prefix}__condition_final", condition.dtype, tuple(condition.shape), host=condition.host)]
    finals += [Value(f"{prefix}_{n}{CARRIED_SUFFIX}", values[n].dtype, tuple(values[n].shape), host=values[n].host)
               for n in captured]
    scanned = [_scanned(f"{prefix}__scanned{i}", v) for i, v in enumerate(node.outputs)]
    loop = Node(node.id, "Loop", f"{prefix}__loop", [trips, None, condition] + [values[n] for n in captured],
                finals + scanned, {"body": body})
    axes = Value(f"{prefix}__axes", "int64", (1,), const=np.array([0], np.int64))
    squeezes = []
    for i, (stacked, output) in enumerate(zip(scanned, node.outputs)):
        if opset.get("", 1) >= 13:
            squeezes.append(Node(node.id, "Squeeze", f"{prefix}__squeeze{i}", [stacked, axes], [output]))
        else:
            squeezes.append(Node(node.id, "Squeeze", f"{prefix}__squeeze{i}", [stacked], [output], {"axes": [0]}))
    return [loop] + squeezes


def _scanned(name: str, output: Value) -> Value:
    """The Loop's scan output for an If output: a leading dim of 1, a host tensor when the output is one."""
    if output.host is None:
        return Value(name, output.dtype, (1,) + tuple(output.shape))
    shape = None if output.host.shape is None else (1,) + tuple(output.host.shape)
    # The importer settles a host tensor's type from ``shape`` (partial dims) when it finishes.
    return Value(name, output.dtype, shape, host=tensor_host_type(output.dtype, shape))  # type: ignore[arg-type]
