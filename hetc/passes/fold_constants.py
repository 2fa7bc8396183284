"""Constant folding: every node whose inputs are all constant (and Shape/Size of any static value)
becomes constant values. Random ops, ops with subgraphs and nodes producing a graph output are kept
(an output stays the result of a task, which keeps later stages free of output-only constants)."""
from __future__ import annotations

import numpy as np

from hetc.ir import Graph, np_dtype
from hetc.frontend.evaluator import SHAPE_OPS, EvaluationError, evaluate, evaluate_shape_op, is_foldable


def fold_constants(graph: Graph) -> Graph:
    """A copy of ``graph`` with its constant subgraphs evaluated."""
    result = graph.copy()
    run_fold_constants(result)
    return result


def run_fold_constants(graph: Graph) -> int:
    """Fold ``graph`` in place; returns the number of nodes folded."""
    graph_outputs = {v.name for v in graph.outputs}
    folded: set[int] = set()
    for node in graph.nodes:
        if not is_foldable(node) or any(v.name in graph_outputs for v in node.outputs):
            continue
        if _dequantizes_a_tensor(node):
            continue
        if node.op_type in SHAPE_OPS and node.domain == "":
            arrays = [evaluate_shape_op(node)]
        elif all(v.is_const for v in node.present_inputs):
            try:
                arrays = evaluate(node, [v.const if v is not None else None for v in node.inputs], graph.opset)
            except EvaluationError:
                continue  # e.g. an op neither runtime implements: it simply stays a node
        else:
            continue
        if len(arrays) < len(node.outputs) or any(a is None for a in arrays):
            continue
        arrays = [_conform(np.asarray(a), v.dtype) for a, v in zip(arrays, node.outputs)]
        if any(a.shape != v.shape for a, v in zip(arrays, node.outputs)):
            continue  # disagrees with shape inference: trust neither, keep the node
        for value, array in zip(node.outputs, arrays):
            value.const = array
        folded.add(node.id)
    if folded:
        graph.nodes = [n for n in graph.nodes if n.id not in folded]
        graph.relink()
    return len(folded)


def _dequantizes_a_tensor(node) -> bool:
    """A DequantizeLinear of a constant tensor is kept: the weight stays int8 in memory and is dequantized
    at run time, as the model says, rather than stored as a float copy (hetc.passes.qdq lowers the ones an
    integer op can read directly)."""
    source = node.inputs[0] if node.inputs else None
    return (node.op_type == "DequantizeLinear" and node.domain == "" and source is not None
            and source.is_const and source.numel > 1)


def _conform(array: np.ndarray, dtype: str) -> np.ndarray:
    target = np_dtype(dtype)
    return array if array.dtype == target else array.astype(target)
