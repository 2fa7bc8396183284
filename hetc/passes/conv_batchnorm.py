"""Conv + BatchNormalization folding: an inference-mode BatchNormalization that alone consumes a Conv's
output is absorbed into the Conv's weights and bias:

    y = gamma * (conv(x, W) + b - mean) / sqrt(var + eps) + beta
      = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)  (per output channel)
"""
from __future__ import annotations

import numpy as np

from hetc.ir import Graph, Node
from hetc.passes.rewrite import new_constant


def fold_conv_batchnorm(graph: Graph) -> Graph:
    """A copy of ``graph`` with every foldable Conv+BatchNormalization pair merged into the Conv."""
    result = graph.copy()
    run_fold_conv_batchnorm(result)
    return result


def run_fold_conv_batchnorm(graph: Graph) -> int:
    """Fold in place; returns the number of BatchNormalization nodes removed."""
    graph_outputs = {v.name for v in graph.outputs}
    removed: set[int] = set()
    for bn in graph.nodes:
        conv = _foldable_conv(bn, graph_outputs)
        if conv is None:
            continue
        weight, bias = _folded_parameters(conv, bn)
        out = bn.outputs[0]
        conv.inputs = [conv.inputs[0], new_constant(graph, conv.inputs[1].name + "_bnfold", weight),
                       new_constant(graph, _bias_name(conv) + "_bnfold", bias)]
        # The Conv now produces the BatchNormalization's output value (keeping its name for outputs).
        conv.outputs = [out]
        out.producer = conv  # lets a following BatchNormalization fold into the same Conv
        removed.add(bn.id)
    if removed:
        graph.nodes = [n for n in graph.nodes if n.id not in removed]
        graph.relink()
    return len(removed)


def _foldable_conv(bn: Node, graph_outputs: set[str]) -> Node | None:
    if bn.op_type != "BatchNormalization" or bn.domain != "" or bn.attrs.get("training_mode", 0):
        return None
    if len(bn.outputs) > 1 and any(v.consumers or v.name in graph_outputs for v in bn.outputs[1:]):
        return None  # running statistics are used: training-mode semantics
    if any(v is None or not v.is_const for v in bn.inputs[1:5]) or bn.inputs[0] is None:
        return None
    conv = bn.inputs[0].producer
    if conv is None or conv.op_type != "Conv" or conv.domain != "" or len(conv.outputs) != 1:
        return None
    conv_out = conv.outputs[0]
    if len(conv_out.consumers) != 1 or conv_out.name in graph_outputs:
        return None
    weight = conv.inputs[1]
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if weight is None or not weight.is_const or (bias is not None and not bias.is_const):
        return None
    if weight.dtype not in ("float32", "float64", "float16") or bn.inputs[1].shape != (weight.shape[0],):
        return None
    return conv


def _folded_parameters(conv: Node, bn: Node) -> tuple[np.ndarray, np.ndarray]:
    weight = conv.inputs[1].const
    bias_value = conv.inputs[2] if len(conv.inputs) > 2 else None
    out_channels = weight.shape[0]
    bias = bias_value.const.astype(np.float64) if bias_value is not None else np.zeros(out_channels)
    gamma, beta, mean, var = (np.asarray(v.const, dtype=np.float64) for v in bn.inputs[1:5])
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    # Scale in the weight's own precision: one rounding per element, and no float64 copy of big weights.
    new_weight = weight * scale.astype(weight.dtype).reshape((-1,) + (1,) * (weight.ndim - 1))
    new_bias = (bias - mean) * scale + beta
    return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)


def _bias_name(conv: Node) -> str:
    return conv.inputs[2].name if len(conv.inputs) > 2 and conv.inputs[2] is not None else conv.name + "_bias"
