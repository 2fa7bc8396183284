"""Function ops that onnx can only type through their function body.

An op with a function body and no shape inference function of its own (MeanVarianceNormalization) is typed
by inferring its body. The body reads the node's attributes by reference (``value_ints = @axes``), and
onnx substitutes only the attributes the node spells out: an omitted attribute leaves the referencing
node without a value, and strict inference fails although ONNX defines the omitted attribute as its
default. Writing those defaults onto the node changes nothing it means and lets inference type it.
"""
from __future__ import annotations

import onnx

from hetc.frontend.opsets import DEFAULT_DOMAINS


def spell_out_referenced_defaults(graph: onnx.GraphProto, opset: dict[str, int]) -> None:
    """Give every node of ``graph`` (and of its subgraphs) typed through its function body the default of
    each attribute the body references and the node omits, in place."""
    for node in graph.node:
        for attr in node.attribute:
            for body in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                spell_out_referenced_defaults(body, opset)
        _spell_out(node, opset)


def _spell_out(node: onnx.NodeProto, opset: dict[str, int]) -> None:
    domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
    domains = DEFAULT_DOMAINS if not domain else (domain,)
    version = max((opset[d] for d in domains if d in opset), default=None)
    if version is None:
        return
    try:
        schema = onnx.defs.get_schema(node.op_type, version, domain)
    except onnx.defs.SchemaError:
        return
    if not schema.has_function or schema.has_type_and_shape_inference_function:
        return
    referenced = {a.ref_attr_name for body in _function_bodies(schema) for n in body.node for a in n.attribute
                  if a.ref_attr_name}
    present = {a.name for a in node.attribute}
    for name in sorted(referenced - present):
        default = schema.attributes[name].default_value if name in schema.attributes else None
        if default is not None and default.type != onnx.AttributeProto.UNDEFINED:
            attribute = node.attribute.add()
            attribute.CopyFrom(default)
            attribute.name = name


def _function_bodies(schema: onnx.defs.OpSchema) -> list[onnx.FunctionProto]:
    bodies = []
    for version in schema.function_opset_versions:
        body = onnx.FunctionProto()
        body.ParseFromString(schema.get_function_with_opset_version(version))
        bodies.append(body)
    return bodies
