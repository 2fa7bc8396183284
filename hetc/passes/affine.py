"""Per-channel scales and shifts folded into the Conv or BatchNormalization before them.

Caffe-era exports write a BatchNormalization as the normalisation and a separate "Scale" layer: a Mul and an
Add of per-channel constants (DenseNet-121: 121 such pairs, after its convolutions and in its pre-activation
blocks). Each is a pass over the activation; on an NPU each was a launch, or an epilogue part at the vector
unit's rate. Both are affine per output channel, as is what they follow, so they fold into its parameters:

    Conv -> Mul(c):               W' = W * c[o],       b' = b * c[o]
    Conv -> Add(d):               b' = b + d[o]
    BatchNormalization -> Mul(c): gamma' = gamma * c,  beta' = beta * c
    BatchNormalization -> Add(d): beta' = beta + d

A constant qualifies when it is float, of the producer's dtype, and varies along the channel axis (axis 1) of
the result at most: shape (C, 1, 1), (1, C, 1, 1), a scalar... Each rule is a pattern and a replacement run by
the one driver (hetc.passes.patterns); they run after Conv+BatchNormalization folding and before epilogue
fusion, which then fuses what is left (the Relu) into the Conv or the BatchNormalization.
"""
from __future__ import annotations

import numpy as np

from hetc.ir import FLOAT_DTYPES, Graph, Node
from hetc.passes.patterns import Match, Rule, pattern, run_rules
from hetc.passes.rewrite import new_constant


def _per_channel(m: Match) -> np.ndarray | None:
    """The captured constant as one value per output channel (length C), or None when it does not qualify."""
    const, out = m.captured["e"], m.output
    if (not const.is_const or const.dtype != out.dtype or out.dtype not in FLOAT_DTYPES or len(out.shape) < 2
            or out.shape != m.anchor.shape):
        return None
    shape = (1,) * (len(out.shape) - len(const.shape)) + tuple(const.shape)
    if len(shape) != len(out.shape) or any(d != 1 for a, d in enumerate(shape) if a != 1):
        return None
    channels = out.shape[1]
    if shape[1] not in (1, channels):
        return None
    return np.broadcast_to(np.asarray(const.const).reshape(-1), (channels,)).astype(np.float64)


def _foldable(m: Match) -> bool:
    """The anchor comes from a plain Conv with constant weights (and bias) or an inference BatchNormalization
    with constant parameters, read by the Mul/Add alone, and the constant is per channel."""
    producer = m.anchor.producer
    if producer is None or producer.domain != "" or len(producer.outputs) != 1 or _per_channel(m) is None:
        return False
    if producer.op_type == "Conv":
        return all(v is not None and v.is_const for v in producer.inputs[1:])
    if producer.op_type == "BatchNormalization":
        return (not producer.attrs.get("training_mode", 0)
                and all(v is not None and v.is_const for v in producer.inputs[1:5]))
    return False


def _fold(scale: bool):
    def build(graph: Graph, m: Match) -> list[Node]:
        producer, factor = m.anchor.producer, _per_channel(m)
        dtype = np.dtype(m.output.dtype)
        if producer.op_type == "Conv":
            weight = producer.inputs[1].const
            bias = (producer.inputs[2].const.astype(np.float64) if len(producer.inputs) > 2
                    else np.zeros(weight.shape[0]))
            if scale:
                weight = weight * factor.astype(weight.dtype).reshape((-1,) + (1,) * (weight.ndim - 1))
                producer.inputs[1] = new_constant(graph, producer.inputs[1].name + "_scaled", weight.astype(dtype))
            bias = bias * factor if scale else bias + factor
            named = producer.inputs[2].name if len(producer.inputs) > 2 else producer.name + "_bias"
            producer.inputs = [*producer.inputs[:2], new_constant(graph, named + "_affine", bias.astype(dtype))]
        else:
            gamma, beta = (np.asarray(v.const, dtype=np.float64) for v in producer.inputs[1:3])
            if scale:
                gamma, beta = gamma * factor, beta * factor
            else:
                beta = beta + factor
            producer.inputs = [producer.inputs[0], new_constant(graph, producer.inputs[1].name + "_affine",
                                                             gamma.astype(dtype)),
                               new_constant(graph, producer.inputs[2].name + "_affine", beta.astype(dtype)),
                               *producer.inputs[3:]]
        producer.outputs = [m.output]
        return []
    return build


AFFINE_RULES: list[Rule] = [
    Rule("per-channel Mul into Conv/BatchNormalization", pattern(("Mul", ["x", "?e"], "y")), _foldable, _fold(True)),
    Rule("per-channel Add into Conv/BatchNormalization", pattern(("Add", ["x", "?e"], "y")), _foldable, _fold(False)),
]


def run_fold_affine(graph: Graph) -> int:
    """Fold in place; returns the number of Mul and Add nodes removed."""
    return sum(run_rules(graph, AFFINE_RULES).values())
