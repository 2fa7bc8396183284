"""Scaled dot-product attention from its decomposed form into one composite ``Attention`` node, as pattern
rules; and the pass that runs these and the normalisation rules (hetc.passes.normalization).

Exporters write attention over 4-D heads as ``MatMul(Q, Transpose(K)) -> Mul scale (or Div) -> Add mask (or
Where(mask, ., -inf)) -> Softmax -> MatMul(., V)``, with grouped-query heads spelled as
``Unsqueeze(2) -> Expand -> Reshape`` of K and V. The rule anchors at the scores (the Q.K^T product), matches
the chain after them and absorbs what comes before: the Transpose of K, a scalar Mul of Q, the head repeats
(so the fused node reads each K/V head once). The result means ONNX's opset-23 Attention: ``scale``,
``is_causal`` (a constant mask that is the upper-left causal triangle), an additive float or a boolean mask.
Scores and probabilities never leave the kernel; the NPU/DSP kernel tiles over keys with an online softmax.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np

from hetc.ir import FLOAT_DTYPES, Graph, Node, Value
from hetc.ir.fused import FUSED_DOMAIN, PARTS_ATTR
from hetc.passes.fusion import GELU_RULES
from hetc.passes.normalization import NORMALIZATION_RULES
from hetc.passes.patterns import Match, Pattern, Rule, pattern, run_rules

# A masked score at or below this is a hard mask: exp() of it underflows to exactly 0 in float16 and float32.
_HARD_MASK = -1e4


def _attention_patterns() -> list[Pattern]:
    scales = [[("Mul", ["x", "#scale"], "s")], [("Div", ["x", "#divisor"], "s")], []]
    masks = [lambda s: [("Add", [s, "?mask"], "k")], lambda s: [("Where", ["?cond", s, "#fill"], "k")],
             lambda s: []]
    found = []
    for scale, mask in product(scales, masks):
        scaled = scale[-1][2] if scale else "x"
        masked = mask(scaled)
        last = masked[-1][2] if masked else scaled
        found.append(pattern(*scale, *masked, ("Softmax", [last], "p"), ("MatMul", ["p", "?v"], "y")))
    return found


@dataclass
class _Plan:
    q: Value
    k: Value
    v: Value
    scale: float
    mask: Value | None = None
    causal: bool = False
    absorbed: list[Node] = field(default_factory=list)


def _sole_reader(v: Value, reader: Node, m: Match) -> bool:
    return len(v.consumers) == 1 and v.consumers[0] is reader and v.name not in m.graph_outputs


def _plain(node: Node | None, op: str) -> bool:
    return node is not None and node.op_type == op and node.domain == "" and len(node.outputs) == 1


def _scalar(v: Value | None) -> float | None:
    if v is None or not v.is_const or np.asarray(v.const).size != 1:
        return None
    return float(np.asarray(v.const).reshape(-1)[0])


def _unscaled_q(q: Value, reader: Node, m: Match, plan: _Plan) -> Value:
    """Q without a scalar Mul that only feeds the scores (the scale goes into the node's ``scale``)."""
    mul = q.producer
    if not _plain(mul, "Mul") or not _sole_reader(q, reader, m):
        return q
    for a, b in (mul.inputs, mul.inputs[::-1]):
        c = _scalar(b)
        if c is not None and a is not None and not a.is_const and a.shape == q.shape:
            plan.scale *= c
            plan.absorbed.append(mul)
            return a
    return q


def _unrepeated(x: Value, reader: Node, m: Match) -> tuple[Value, list[Node]] | None:
    """The K or V heads before ``Unsqueeze(2) -> Expand -> Reshape`` repeated them for grouped-query
    attention, and the three nodes; None when ``x`` is not such a repeat read by ``reader`` alone."""
    reshape = x.producer
    if not _plain(reshape, "Reshape") or not _sole_reader(x, reader, m):
        return None
    expand = reshape.inputs[0].producer
    if not _plain(expand, "Expand") or not _sole_reader(reshape.inputs[0], reshape, m):
        return None
    unsqueeze = expand.inputs[0].producer
    if not _plain(unsqueeze, "Unsqueeze") or not _sole_reader(expand.inputs[0], expand, m):
        return None
    axes = unsqueeze.attrs.get("axes")
    if len(unsqueeze.inputs) > 1 and unsqueeze.inputs[1] is not None and unsqueeze.inputs[1].is_const:
        axes = np.asarray(unsqueeze.inputs[1].const).reshape(-1).tolist()
    source = unsqueeze.inputs[0]
    if axes is None or [int(a) for a in axes] not in ([2], [-3]) or len(source.shape) != 4:
        return None
    b, heads, length, size = source.shape
    group = expand.outputs[0].shape[2] if len(expand.outputs[0].shape) == 5 else 0
    if expand.outputs[0].shape != (b, heads, group, length, size) or x.shape != (b, heads * group, length, size):
        return None
    return source, [reshape, expand, unsqueeze]


def _causal_or_mask(mask: np.ndarray, keep: bool, rows: int, cols: int) -> str:
    """"causal" when ``mask`` (additive floats, or booleans saying which keys are kept when ``keep``) is the
    upper-left causal triangle for every batch and head, "none" when it masks nothing, else "mask"."""
    full = np.broadcast_to(mask, mask.shape[:-2] + (rows, cols)).reshape(-1, rows, cols)
    if not (full == full[:1]).all():
        return "mask"
    kept = full[0] if keep else full[0] == 0
    hard = ~full[0] if keep else full[0] <= _HARD_MASK
    upper = np.triu(np.ones((rows, cols), bool), 1)
    if kept.all():
        return "none"
    if (kept == ~upper).all() and hard[upper].all():
        return "causal"
    return "mask"


def _mask(m: Match, scores: Value, plan: _Plan) -> bool:
    rows, cols = scores.shape[-2:]
    mask, cond = m.captured.get("mask"), m.captured.get("cond")
    if mask is not None:
        if mask.dtype != scores.dtype or len(mask.shape) > 4 or not _broadcasts(mask.shape, scores.shape):
            return False
        verdict = _causal_or_mask(np.asarray(mask.const), False, rows, cols) if mask.is_const else "mask"
    elif cond is not None:
        fill = m.captured.get("fill")
        if cond.dtype != "bool" or len(cond.shape) > 4 or not _broadcasts(cond.shape, scores.shape):
            return False
        if fill is None or fill > _HARD_MASK:
            return False   # a soft fill is not a mask Attention can express
        mask = cond
        verdict = _causal_or_mask(np.asarray(cond.const), True, rows, cols) if cond.is_const else "mask"
    else:
        return True
    plan.causal = verdict == "causal"
    plan.mask = mask if verdict == "mask" else None
    return True


def _broadcasts(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    return len(small) <= len(big) and all(x in (1, y) for x, y in zip(small[::-1], big[::-1]))


def _plan(m: Match) -> _Plan | None:
    scores, product_ = m.anchor, m.anchor.producer
    if not _plain(product_, "MatMul") or len(product_.inputs) != 2:
        return None
    q, kt = product_.inputs
    softmax, out = m.nodes["p"], m.output
    axis = int(softmax.attrs.get("axis", -1 if m.opset >= 13 else 1))
    if scores.dtype not in FLOAT_DTYPES or len(scores.shape) != 4 or axis not in (-1, 3):
        return None
    transpose = kt.producer
    if not _plain(transpose, "Transpose") or list(transpose.attrs.get("perm", [])) != [0, 1, 3, 2] \
            or not _sole_reader(kt, product_, m):
        return None
    divisor, scale = m.captured.get("divisor"), m.captured.get("scale")
    if divisor == 0:
        return None
    scale = 1.0 / divisor if divisor is not None else scale if scale is not None else 1.0
    plan = _Plan(q, transpose.inputs[0], m.captured["v"], scale, absorbed=[product_, transpose])
    plan.q = _unscaled_q(q, product_, m, plan)
    k_heads, v_heads = _unrepeated(plan.k, transpose, m), _unrepeated(plan.v, m.nodes["y"], m)
    if k_heads and v_heads and k_heads[0].shape[1] == v_heads[0].shape[1]:
        plan.k, plan.v = k_heads[0], v_heads[0]
        plan.absorbed += k_heads[1] + v_heads[1]
    (b, hq, sq, d), (bk, hk, skv, dk), (bv, hv, sv, dv) = plan.q.shape, plan.k.shape, plan.v.shape
    if len({b, bk, bv}) != 1 or hk != hv or hq % hk or d != dk or skv != sv or (len(plan.v.shape) != 4):
        return None
    if out.shape != (b, hq, sq, dv) or scores.shape != (b, hq, sq, skv) or out.dtype != scores.dtype:
        return None
    return plan if _mask(m, scores, plan) else None


def _build(graph: Graph, m: Match) -> list[Node]:
    plan = _plan(m)
    assert plan is not None   # (where() said so)
    m.absorbed += plan.absorbed
    inputs = [plan.q, plan.k, plan.v] + ([plan.mask] if plan.mask is not None else [])
    upstream = [n.op_type for n in reversed(plan.absorbed)]
    attrs = {"scale": float(plan.scale), PARTS_ATTR: upstream + [n.op_type for n in m.nodes.values()]}
    if plan.causal:
        attrs["is_causal"] = 1
    product_ = m.anchor.producer
    # The Q.K^T MatMul's id: it is removed, and ids must stay unique until the pipeline renumbers.
    return [Node(product_.id, "Attention", product_.name or m.output.name, inputs, [m.output], attrs,
                 FUSED_DOMAIN)]


ATTENTION_RULES: list[Rule] = [Rule("scaled dot-product attention", p, lambda m: _plan(m) is not None, _build)
                               for p in _attention_patterns()]
COMPOSITE_RULES: list[Rule] = NORMALIZATION_RULES + ATTENTION_RULES + GELU_RULES


def run_fuse_composites(graph: Graph) -> int:
    """Rewrite decomposed normalisations and attention into composite nodes in place; the number of rewrites."""
    return sum(run_rules(graph, COMPOSITE_RULES).values())


def fuse_composites(graph: Graph) -> Graph:
    """A copy of ``graph`` with its decomposed norms and attention rewritten."""
    result = graph.copy()
    run_fuse_composites(result)
    return result
