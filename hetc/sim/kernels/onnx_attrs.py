"""ONNX AttributeProto -> the IR's plain attribute values (what ``run_kernel`` receives). The frontend has
its own importer; this one serves the kernel conformance runner and the single-model kernel runner."""
from __future__ import annotations

from typing import Any

import onnx
from onnx import helper, numpy_helper


def plain_attr(attr: onnx.AttributeProto) -> Any:
    """One attribute as a plain Python value: str for strings, numpy arrays for tensors, GraphProto kept."""
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value:
        if isinstance(value[0], bytes):
            return [v.decode() for v in value]
        if isinstance(value[0], onnx.TensorProto):
            return [numpy_helper.to_array(v) for v in value]
    return value


def plain_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {attr.name: plain_attr(attr) for attr in node.attribute}
