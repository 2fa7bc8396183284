"""A mixture of experts' router from its decomposed form into one composite ``TopKGate`` node (hetc.ir.fused,
``HETC_COMPOSITES``): one kernel launch instead of seven.

Routers write their gates as ``p = Softmax(logits)``, ``TopK(p, k)``'s indices one-hot encoded and summed over
the k choices into a 0/1 mask, ``g = p * mask`` and ``g / ReduceSum(g)``: each row's top-k probabilities
renormalised, zero elsewhere. The rule anchors at ``p`` (read by the TopK and the Mul, so the anchor is kept),
matches ``Mul -> ReduceSum -> Div`` after it and absorbs the Softmax, the TopK, the OneHot and the mask's
ReduceSum before, once it has checked that nothing else reads them. When the logits are a MatMul of a
constant matrix read by the Softmax alone (the router's projection), the composite takes that too and reads
``(x, W)``: the router is then one launch, not two, and its gates are known a launch and a sync earlier, which
is what a predicated expert's weights wait for. The composite means exactly those ops (hetc.ir.composite writes
them back for onnxruntime; the NPU/DSP kernel is hetc.sim.kernels.select).
"""
from __future__ import annotations

import numpy as np

from hetc.ir import FLOAT_DTYPES, Graph, Node, Value
from hetc.ir.fused import FUSED_DOMAIN, PARTS_ATTR
from hetc.passes.patterns import Match, Rule, pattern, run_rules


def _axes(node: Node, opset: int) -> list[int] | None:
    """A ReduceSum's constant axes (attribute before opset 13, input since)."""
    if opset < 13 or len(node.inputs) < 2:
        return [int(a) for a in node.attrs.get("axes", [])] or None
    axes = node.inputs[1]
    return None if axes is None or not axes.is_const else [int(a) for a in np.asarray(axes.const).reshape(-1)]


def _only_reader(value: Value, reader: Node) -> bool:
    return value.consumers == [reader]


def _plan(m: Match) -> tuple[int, list[Node]] | None:
    """(k, the upstream nodes to absorb) when the match is a router's gating exactly, else None."""
    p, mul, total = m.anchor, m.nodes["g"], m.nodes["s"]
    softmax, mask = p.producer, m.captured["mask"]
    rows, experts = (p.shape + (0, 0))[:2] if len(p.shape) == 2 else (0, 0)
    if softmax is None or softmax.op_type != "Softmax" or softmax.domain or p.dtype not in FLOAT_DTYPES or not rows \
            or p.name in m.graph_outputs:   # (the composite absorbs the Softmax: its output must go)
        return None
    if int(softmax.attrs.get("axis", -1 if m.opset >= 13 else 1)) not in (-1, 1):
        return None
    collapse = mask.producer
    if collapse is None or collapse.op_type != "ReduceSum" or _axes(collapse, m.opset) not in ([1], [-2]) \
            or int(collapse.attrs.get("keepdims", 1)) != 0 or not _only_reader(mask, mul):
        return None
    hot = collapse.inputs[0].producer
    if hot is None or hot.op_type != "OneHot" or int(hot.attrs.get("axis", -1)) not in (-1, 2) \
            or not _only_reader(collapse.inputs[0], collapse):
        return None
    depth, values = hot.inputs[1], hot.inputs[2]
    if not (depth.is_const and values.is_const) or int(np.asarray(depth.const).reshape(-1)[0]) != experts \
            or np.asarray(values.const).reshape(-1).tolist() != [0, 1]:
        return None
    topk = hot.inputs[0].producer
    if topk is None or topk.op_type != "TopK" or topk.inputs[0] is not p or not _only_reader(hot.inputs[0], hot):
        return None
    k_input = topk.inputs[1] if len(topk.inputs) > 1 else None
    if k_input is None or not k_input.is_const or topk.outputs[0].consumers or \
            int(topk.attrs.get("axis", -1)) not in (-1, 1) or not int(topk.attrs.get("largest", 1)):
        return None
    if sorted(id(c) for c in p.consumers) != sorted((id(topk), id(mul))) or \
            _axes(total, m.opset) not in ([1], [-1]) or int(total.attrs.get("keepdims", 1)) != 1:
        return None
    if m.output.shape != p.shape or m.output.dtype != p.dtype:
        return None
    projection = _projection(softmax, m.graph_outputs)
    return int(np.asarray(k_input.const).reshape(-1)[0]), [*projection, softmax, topk, hot, collapse]


def _projection(softmax: Node, graph_outputs: frozenset[str]) -> list[Node]:
    """``[MatMul]`` when the Softmax's logits are ``x @ W`` (x of rank 2, W a constant matrix) read by the
    Softmax alone and no graph output, else ``[]``."""
    logits = softmax.inputs[0]
    mm = logits.producer
    if mm is None or mm.op_type != "MatMul" or mm.domain or not _only_reader(logits, softmax) or \
            logits.name in graph_outputs:
        return []
    x, w = mm.inputs[0], mm.inputs[1]
    if x is None or w is None or not w.is_const or len(x.shape) != 2 or len(w.shape) != 2 or x.dtype != w.dtype:
        return []
    return [mm]


def _build(graph: Graph, m: Match) -> list[Node]:
    planned = _plan(m)
    assert planned is not None   # (where() said so)
    k, upstream = planned
    m.absorbed += upstream
    softmax = m.anchor.producer
    # the first absorbed node's inputs: the projection's (x, W), or the Softmax's logits
    inputs = list(upstream[0].inputs[:2] if upstream[0] is not softmax else softmax.inputs[:1])
    attrs = {"k": k, "experts": int(m.anchor.shape[1]),
             PARTS_ATTR: [n.op_type for n in upstream] + [n.op_type for n in m.nodes.values()]}
    # The Softmax's id: it is removed, and ids must stay unique until the pipeline renumbers.
    return [Node(softmax.id, "TopKGate", softmax.name or m.output.name, inputs, [m.output], attrs, FUSED_DOMAIN)]


ROUTER_RULES: list[Rule] = [
    Rule("top-k router gates", pattern(("Mul", ["x", "?mask"], "g"), ("ReduceSum", ["g", "?axes?"], "s"),
                                       ("Div", ["g", "s"], "y"), keep_anchor=True),
         lambda m: _plan(m) is not None, _build),
]


def run_fuse_routers(graph: Graph) -> int:
    """Rewrite decomposed top-k routers into TopKGate nodes in place; the number of rewrites."""
    return sum(run_rules(graph, ROUTER_RULES).values())
