"""Removal of nodes that compute nothing at inference: Identity, and Dropout in inference mode (its
optional mask becomes a constant all-true/all-one tensor)."""
from __future__ import annotations

import numpy as np

from hetc.ir import Graph, Node, Value, np_dtype
from hetc.passes.rewrite import replace_uses


def remove_identities(graph: Graph) -> Graph:
    """A copy of ``graph`` without Identity and inference-mode Dropout nodes."""
    result = graph.copy()
    run_remove_identities(result)
    return result


def run_remove_identities(graph: Graph) -> int:
    """Remove in place; returns the number of nodes removed."""
    removed: set[int] = set()
    for node in graph.nodes:
        if _is_identity(node) and _bypass(graph, node):
            removed.add(node.id)
    if removed:
        graph.nodes = [n for n in graph.nodes if n.id not in removed]
        graph.relink()
    return len(removed)


def _is_identity(node: Node) -> bool:
    if node.domain != "" or not node.inputs or node.inputs[0] is None:
        return False
    if node.op_type == "Identity":
        return True
    # A Dropout whose training_mode may be true at run time draws a random mask: it stays.
    return node.op_type == "Dropout" and not dropout_may_train(node)


# Ops that only reinterpret their input's bytes: the memory planner aliases output and input storage
# (DESIGN.md, "In-place aliasing"), so running one moves no data. Dropout is one only in inference mode:
# ask ``is_view`` for a node.
VIEW_OPS: frozenset[str] = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})


def is_view(node: Node) -> bool:
    """Whether ``node`` only reinterprets its input's bytes (``VIEW_OPS``, less a Dropout that may train)."""
    return node.op_type in VIEW_OPS and not dropout_may_train(node)


def dropout_may_train(node: Node) -> bool:
    """Whether a Dropout node may run in training mode, drawing a random mask: its ``training_mode`` input
    (opset 12+) is present and not a constant false. Opset 7-11 Dropout is inference only, and no opset < 7
    Dropout reaches the IR: the importer converts to opset 7, whose converter refuses an explicit
    ``is_test=0`` and makes an omitted one (opset 6's training default) inference, as onnx decides."""
    if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
        return False
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return False
    return not (training.is_const and not bool(np.asarray(training.const).any()))


def _bypass(graph: Graph, node: Node) -> bool:
    """Rewire the node's readers to its input; False if it must stay (see below)."""
    source, result = node.inputs[0], node.outputs[0]
    outputs = [v.name for v in graph.outputs]
    mask = node.outputs[1] if len(node.outputs) > 1 else None
    if mask is not None and (mask.name in outputs or (mask.consumers and graph.opset.get("", 0) < 12)):
        return False  # before opset 12 the inference mask is unspecified (onnxruntime gives all-false)
    if any(c.has_subgraph for v in (source, result) for c in v.consumers):
        return False  # a subgraph may read the value by name: renaming or rewiring would break it
    if result.name in outputs:
        # The output name is the model's interface: rename the source to it, which is possible only if
        # the source is an ordinary intermediate value (not an input, constant or another output).
        if source.producer is None or source.is_const or source.name in outputs:
            return False
        source.name = result.name
        graph.outputs = [source if v is result else v for v in graph.outputs]
    replace_uses(result, source)
    if mask is not None and mask.consumers:
        ones = np.ones(mask.shape, dtype=np_dtype(mask.dtype))
        replace_uses(mask, Value(mask.name, mask.dtype, mask.shape, const=ones))
    return True
