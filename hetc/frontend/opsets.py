"""The default-domain opsets hetc accepts, and the opset a one-node model is stamped with so that
onnxruntime (rather than the slower ``onnx.reference``) can run it.

onnxruntime 1.31 refuses any model stamped above opset 26, yet most ops of an opset-28 model have the
same definition at 26 (an op's schema only changes in the opsets that list a new version of it). A
one-node model of such an op is stamped 26 and onnxruntime runs it; an op whose definition changed after
26 keeps the model's opset and runs on ``onnx.reference``.
"""
from __future__ import annotations

from typing import Any, Iterator

import onnx

MIN_OPSET = 7
# The newest default-domain opset onnxruntime 1.31 loads (also the validator's reference runtime).
RUNTIME_MAX_OPSET = 26
# The newest opset the installed onnx defines: hetc imports models up to it.
NEWEST_OPSET = onnx.defs.onnx_opset_version()
DEFAULT_DOMAINS = ("", "ai.onnx")


def default_domain_version(opset: dict[str, int]) -> int | None:
    versions = [v for d, v in opset.items() if d in DEFAULT_DOMAINS]
    return max(versions) if versions else None


def runtime_opsets(op_type: str, domain: str, attrs: dict[str, Any], opset: dict[str, int]) -> dict[str, int]:
    """``opset`` for a one-node model of ``op_type``, lowered to RUNTIME_MAX_OPSET when the node (and every
    default-domain node of its subgraphs) means exactly the same there; otherwise ``opset`` unchanged."""
    version = default_domain_version(opset)
    if version is None or version <= RUNTIME_MAX_OPSET:
        return opset
    ops = {(domain, op_type)} | set(_subgraph_ops(attrs.values()))
    if not all(_defined_by(op, version) for d, op in ops if d in DEFAULT_DOMAINS):
        return opset
    return {d: (RUNTIME_MAX_OPSET if d in DEFAULT_DOMAINS else v) for d, v in opset.items()}


def _defined_by(op_type: str, version: int) -> bool:
    """Whether ``op_type`` at opset ``version`` has the definition it already had at RUNTIME_MAX_OPSET."""
    try:
        return onnx.defs.get_schema(op_type, version, "").since_version <= RUNTIME_MAX_OPSET
    except onnx.defs.SchemaError:
        return False


def _subgraph_ops(values: Any) -> Iterator[tuple[str, str]]:
    for value in values:
        bodies = value if isinstance(value, list) else [value]
        for body in bodies:
            if isinstance(body, onnx.GraphProto):
                for node in body.node:
                    yield node.domain, node.op_type
                    for attr in node.attribute:
                        yield from _subgraph_ops([attr.g] if attr.type == onnx.AttributeProto.GRAPH
                                                 else [list(attr.graphs)])
