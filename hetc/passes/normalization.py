"""LayerNormalization and RMSNormalization from their decomposed forms, as pattern rules.

Exporters that predate (or do not use) the ONNX ops write a layer norm as
``ReduceMean -> Sub -> Pow 2 (or Mul by itself) -> ReduceMean -> Add eps -> Sqrt -> Div (or Reciprocal, Mul)
-> Mul gamma -> Add beta`` and an RMS norm (Llama, T5) as ``Pow 2 -> ReduceMean -> Add eps -> Sqrt ->
Reciprocal -> Mul x -> Mul weight`` (or ``Div(x, Sqrt)``, ``Div(1, Sqrt)``). Each becomes one composite node
(hetc.ir.fused): one kernel, one launch, one pass over the activation instead of eight. The rules keep their
anchor (the normalised input), which the residual stream usually reads as well. Only the last axis is
normalised (what every exporter writes); the affine parameters must broadcast along it alone.
"""
from __future__ import annotations

from itertools import product
from typing import Callable

import numpy as np

from hetc.ir import FLOAT_DTYPES, Graph, Node, Value, np_dtype
from hetc.ir.fused import FUSED_DOMAIN, PARTS_ATTR
from hetc.passes.patterns import Match, Pattern, Rule, pattern
from hetc.passes.rewrite import unique_name

_SQUARES = {"Pow": lambda v: ("Pow", [v, 2.0]), "Mul": lambda v: ("Mul", [v, v])}


def _inverse_scalings(num: str, den: str) -> list[list[tuple]]:
    """``num / den`` as exporters write it: Div, Reciprocal then Mul, Div(1, .) then Mul."""
    return [[("Div", [num, den], "n")],
            [("Reciprocal", [den], "r"), ("Mul", [num, "r"], "n")],
            [("Div", [1.0, den], "r"), ("Mul", [num, "r"], "n")]]


def _affine_tails(scale: bool, bias: bool) -> list[tuple]:
    tail: list[tuple] = []
    if scale:
        tail.append(("Mul", ["n", "?scale"], "g"))
    if bias:
        tail.append(("Add", ["g" if scale else "n", "?bias"], "b"))
    return tail


def _layer_norm_patterns(scale: bool, bias: bool) -> list[Pattern]:
    found = []
    for square, divide in product(_SQUARES.values(), _inverse_scalings("d", "sd")):
        op, ins = square("d")
        head = [("ReduceMean", ["x", "#ax1?"], "mu"), ("Sub", ["x", "mu"], "d"), (op, ins, "sq"),
                ("ReduceMean", ["sq", "#ax2?"], "var"), ("Add", ["var", "#eps"], "ve"), ("Sqrt", ["ve"], "sd")]
        found.append(pattern(*head, *divide, *_affine_tails(scale, bias), keep_anchor=True))
    return found


def _rms_norm_patterns(scale: bool) -> list[Pattern]:
    found = []
    for square, divide in product(_SQUARES.values(), _inverse_scalings("x", "sd")):
        op, ins = square("x")
        head = [(op, ins, "sq"), ("ReduceMean", ["sq", "#ax2?"], "var"), ("Add", ["var", "#eps"], "ve"),
                ("Sqrt", ["ve"], "sd")]
        found.append(pattern(*head, *divide, *_affine_tails(scale, False), keep_anchor=True))
    return found


def _reduces_last_axis(node: Node, captured_axis: float | None, rank: int) -> bool:
    """A ReduceMean with keepdims over exactly the last axis (axes as attribute or, opset 18, as input)."""
    axes = [captured_axis] if captured_axis is not None else node.attrs.get("axes")
    if not node.attrs.get("keepdims", 1) or axes is None or len(axes) != 1:
        return False
    return int(axes[0]) in (-1, rank - 1)


def _affine_operand(v: Value | None, x: Value) -> bool:
    """A gamma or beta that broadcasts along the normalised axis only: (D,), or a constant of shape
    (1, ..., 1, D) or one element (reshaped to (D,) by the builder)."""
    if v is None:
        return True
    if v.dtype != x.dtype or len(v.shape) > len(x.shape):
        return False
    along_last = all(d == 1 for d in v.shape[:-1]) and (not v.shape or v.shape[-1] in (1, x.shape[-1]))
    return v.shape == (x.shape[-1],) or (v.is_const and along_last)


def _normalises_last_axis(m: Match) -> bool:
    x = m.anchor
    if x.dtype not in FLOAT_DTYPES or not x.shape or m.output.shape != x.shape or m.output.dtype != x.dtype:
        return False
    reduces = [("mu", "ax1"), ("var", "ax2")]
    if not all(_reduces_last_axis(m.nodes[name], m.captured.get(ax), len(x.shape))
               for name, ax in reduces if name in m.nodes):
        return False
    eps = m.captured.get("eps")
    return eps is not None and eps >= 0 and all(_affine_operand(m.captured.get(k), x) for k in ("scale", "bias"))


def _parameter(graph: Graph, m: Match, key: str, fill: float | None) -> Value | None:
    """Gamma or beta as the (D,) input the standard op takes: the captured value, a constant reshaped to (D,),
    or ``fill`` repeated when the pattern had none (None: leave the input out)."""
    x, given = m.anchor, m.captured.get(key)
    size = x.shape[-1]
    if given is not None and given.shape == (size,):
        return given
    if given is None and fill is None:
        return None
    source = np.full(size, fill) if given is None else np.broadcast_to(np.asarray(given.const).reshape(-1), (size,))
    name = unique_name(graph, f"{m.output.name}_{key}")
    value = Value(name, x.dtype, (size,), const=np.ascontiguousarray(source, dtype=np_dtype(x.dtype)))
    graph.values[name] = value
    return value


def _build(op_type: str) -> Callable[[Graph, Match], list[Node]]:
    def build(graph: Graph, m: Match) -> list[Node]:
        inputs = [m.anchor, _parameter(graph, m, "scale", 1.0)]
        if op_type == "LayerNormalization":
            inputs.append(_parameter(graph, m, "bias", None))
        while inputs[-1] is None:
            inputs.pop()
        parts = [n.op_type for n in m.nodes.values()]
        first = next(iter(m.nodes.values()))
        attrs = {"axis": -1, "epsilon": float(m.captured["eps"]), PARTS_ATTR: parts}
        # The first matched node's id: it is removed, and ids must stay unique until the pipeline renumbers.
        return [Node(first.id, op_type, first.name or m.output.name, inputs, [m.output], attrs, FUSED_DOMAIN)]
    return build


def _rules() -> list[Rule]:
    rules = []
    # The fullest form first: a shorter one would stop before the affine tail and leave it unfused.
    for scale, bias in ((True, True), (True, False), (False, False)):
        label = {(True, True): "", (True, False): " without bias", (False, False): " without affine"}[scale, bias]
        rules += [Rule(f"LayerNormalization{label}", p, _normalises_last_axis, _build("LayerNormalization"))
                  for p in _layer_norm_patterns(scale, bias)]
    for scale in (True, False):
        rules += [Rule(f"RMSNormalization{'' if scale else ' without weight'}", p, _normalises_last_axis,
                       _build("RMSNormalization")) for p in _rms_norm_patterns(scale)]
    return rules


NORMALIZATION_RULES: list[Rule] = _rules()
