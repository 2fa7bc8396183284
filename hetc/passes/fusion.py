"""Epilogue fusion: pointwise ops that follow a Conv, ConvTranspose, Gemm, MatMul or BatchNormalization are
absorbed into it, so that the pair runs as one kernel with one launch and no round trip of the intermediate
through memory.

Every rule below is data: a pattern anchored at the base op's output (hetc.passes.patterns), a condition and
the epilogue part it becomes (hetc.ir.fused). A rule applies again to the fused node's new output, so chains
fuse whole: MatMul -> Add(bias) -> Gelu, Conv -> Add(residual) -> Relu, Conv -> Clip (Relu6).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np

from hetc.ir import FLOAT_DTYPES, Graph, Node, Value
from hetc.ir.fused import (EPILOGUE_ATTR, FUSABLE_BASE_OPS, FUSED_DOMAIN, PACKED_BIAS_ATTR, PACKED_FROM,
                           PACKED_WEIGHT_INPUT, PARTS_ATTR, EpiloguePart, is_fused)
from hetc.passes.patterns import Match, Pattern, Rule, pattern, run_rules
from hetc.passes.rewrite import new_constant

_INV_SQRT2 = 1 / math.sqrt(2.0)
_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _fusable(m: Match) -> bool:
    """The anchor comes from a base op (plain or already fused) and the epilogue keeps its shape and dtype."""
    producer = m.anchor.producer
    if producer is None or len(producer.outputs) != 1:
        return False
    if not (is_fused(producer) or (producer.domain == "" and producer.op_type in FUSABLE_BASE_OPS)):
        return False
    out, x = m.output, m.anchor
    if x.dtype not in FLOAT_DTYPES or out.dtype != x.dtype or out.shape != x.shape:
        return False   # an extra operand that broadcasts the result larger is not an epilogue
    extra = m.captured.get("e")
    return extra is None or extra.dtype == x.dtype


def _absorb(part_of: Callable[[Match], EpiloguePart]) -> Callable[[Graph, Match], list[Node]]:
    """The replacement builder of every epilogue rule: the producer takes the part and the match's output
    (the driver removes the matched nodes); a packed bias replaces the weight by weight and bias in one."""
    def build(graph: Graph, m: Match) -> list[Node]:
        base = m.anchor.producer
        part = part_of(m)
        base.domain = FUSED_DOMAIN
        base.attrs = {**base.attrs, EPILOGUE_ATTR: [*base.attrs.get(EPILOGUE_ATTR, []), part.text()]}
        if part.binary:
            base.inputs = [*base.inputs, m.captured["e"]]
        if part.packed:
            weight = base.inputs[PACKED_WEIGHT_INPUT]
            packed = new_constant(graph, f"{weight.name}_and_bias", _packed_array(m))
            base.inputs = [packed if i == PACKED_WEIGHT_INPUT else v for i, v in enumerate(base.inputs)]
        base.outputs = [m.output]
        return []
    return build


def _packed_array(m: Match) -> np.ndarray:
    """The weight with the bias as one more row (hetc.ir.fused: ``Add from='weight'``), made once per match
    (the target's check and the rewrite both want it)."""
    if "packed" not in m.captured:
        weight, bias = m.anchor.producer.inputs[PACKED_WEIGHT_INPUT], m.captured["e"]
        m.captured["packed"] = np.concatenate([np.asarray(weight.const), np.asarray(bias.const).reshape(1, -1)])
    return m.captured["packed"]


def _own_constant(v: Value | None, reader: Node, m: Match) -> bool:
    """``v`` is a constant that ``reader`` alone reads (a model may share a weight or a bias): packing it
    into another constant changes no other node."""
    return v is not None and v.is_const and v.consumers == [reader] and v.name not in m.graph_outputs


def _packable(m: Match) -> bool:
    """The Add's operand is a bias of a plain MatMul's constant 2-D weight (a row of one value per output
    column), each constant its reader's own: the two may become one constant, one copy."""
    base, bias = m.anchor.producer, m.captured.get("e")
    if base is None or base.domain != "" or base.op_type != "MatMul":
        return False
    weight = base.inputs[PACKED_WEIGHT_INPUT]
    if not (_own_constant(weight, base, m) and _own_constant(bias, m.nodes["y"], m)):
        return False
    columns = weight.shape[1] if len(weight.shape) == 2 else None
    return (weight.dtype == bias.dtype and bias.shape in ((columns,), (1, columns))
            and m.anchor.shape[-1:] == (columns,))


PartOf = Callable[[Match], EpiloguePart]
# Whether a target wants ``fused`` (the base op with one more epilogue part) in place of ``base`` as it is:
# hetc.target.lowering.fusion_check. None: every epilogue fuses.
FusionCheck = Callable[[Node, Node], bool]


Condition = Callable[[Match], bool]


def _rule(name: str, pat: Pattern, part_of: PartOf, condition: Condition | None = None,
          check: FusionCheck | None = None) -> Rule:
    def where(m: Match) -> bool:
        if not _fusable(m) or (condition is not None and not condition(m)):
            return False
        return check is None or check(m.anchor.producer, _with_part(m, part_of(m)))
    return Rule(name, pat, where, _absorb(part_of))


def _with_part(m: Match, part: EpiloguePart) -> Node:
    """The anchor's producer as it would be with ``part`` fused (a new node: the producer is not edited)."""
    base = m.anchor.producer
    inputs = [*base.inputs, m.captured["e"]] if part.binary else list(base.inputs)
    if part.packed:
        array = _packed_array(m)
        inputs[PACKED_WEIGHT_INPUT] = Value(inputs[PACKED_WEIGHT_INPUT].name, str(array.dtype), array.shape,
                                            const=array)
    attrs = {**base.attrs, EPILOGUE_ATTR: [*base.attrs.get(EPILOGUE_ATTR, []), part.text()]}
    return Node(base.id, base.op_type, base.name, inputs, [m.output], attrs, FUSED_DOMAIN)


def _fixed(op: str, **params: object) -> Callable[[Match], EpiloguePart]:
    return lambda m: EpiloguePart(op, tuple(params.items()))


def _clip(m: Match) -> EpiloguePart:
    node = m.nodes["y"]   # opset < 11 gives the bounds as attributes
    bounds = [(key, m.captured.get(key) if m.captured.get(key) is not None else node.attrs.get(key))
              for key in ("min", "max")]
    return EpiloguePart("Clip", tuple((k, float(v)) for k, v in bounds if v is not None))


def _leaky_relu(m: Match) -> EpiloguePart:
    return EpiloguePart("LeakyRelu", (("alpha", float(m.nodes["y"].attrs.get("alpha", 0.01))),))


def _gelu_op(m: Match) -> EpiloguePart:
    approximate = m.nodes["y"].attrs.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
    return EpiloguePart("Gelu", (("approximate", approximate),))


def _gelu_erf_patterns() -> list[Pattern]:
    """0.5 * x * (1 + erf(x / sqrt 2)) as exporters write it: x / sqrt 2 or x * (1 / sqrt 2), and the 0.5
    applied last or to x first."""
    found = []
    for scale in (("Div", ["x", _SQRT2], "a"), ("Mul", ["x", _INV_SQRT2], "a")):
        head = [scale, ("Erf", ["a"], "b"), ("Add", ["b", 1.0], "c")]
        found.append(pattern(*head, ("Mul", ["x", "c"], "d"), ("Mul", ["d", 0.5], "y")))
        found.append(pattern(*head, ("Mul", ["x", 0.5], "h"), ("Mul", ["h", "c"], "y")))
    return found


def _gelu_tanh_patterns() -> list[Pattern]:
    """0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))), with Pow(x, 3), the 0.5 last or first."""
    head = [("Pow", ["x", 3.0], "p"), ("Mul", ["p", 0.044715], "q"), ("Add", ["x", "q"], "r"),
            ("Mul", ["r", _SQRT_2_OVER_PI], "s"), ("Tanh", ["s"], "t"), ("Add", ["t", 1.0], "u")]
    return [pattern(*head, ("Mul", ["x", "u"], "v"), ("Mul", ["v", 0.5], "y")),
            pattern(*head, ("Mul", ["x", 0.5], "h"), ("Mul", ["h", "u"], "y"))]


# A MatMul's constant bias goes into its weight (one constant, one DMA) before any other Add rule is tried;
# left out where the target copies no weights (hetc.target.lowering.packs_biases).
_PACK_EPILOGUE = ("bias Add packed into the weight", pattern(("Add", ["x", "?e"], "y")),
                  _fixed("Add", **{"from": PACKED_FROM}), _packable)
# The epilogue rules as (name, pattern, part[, condition]), tried in this order at every value until none
# applies.
_EPILOGUES: list[tuple[str, Pattern, PartOf] | tuple[str, Pattern, PartOf, Condition]] = [
    _PACK_EPILOGUE,
    ("bias or residual Add", pattern(("Add", ["x", "?e"], "y")), _fixed("Add")),
    ("two-input Sum as Add", pattern(("Sum", ["x", "?e"], "y")), _fixed("Add")),   # old ResNet exports
    ("scale Mul", pattern(("Mul", ["x", "?e"], "y")), _fixed("Mul")),
    ("Relu", pattern(("Relu", ["x"], "y")), _fixed("Relu")),
    ("Clip (Relu6)", pattern(("Clip", ["x", "#min?", "#max?"], "y")), _clip),
    ("LeakyRelu", pattern(("LeakyRelu", ["x"], "y")), _leaky_relu),
    ("Sigmoid", pattern(("Sigmoid", ["x"], "y")), _fixed("Sigmoid")),
    ("SiLU x*Sigmoid(x)", pattern(("Sigmoid", ["x"], "s"), ("Mul", ["x", "s"], "y")), _fixed("SiLU")),
    ("HardSwish", pattern(("HardSwish", ["x"], "y")), _fixed("HardSwish")),
    ("Gelu op", pattern(("Gelu", ["x"], "y")), _gelu_op),
    ("Gelu composite", pattern((f"{FUSED_DOMAIN}:Gelu", ["x"], "y")), _gelu_op),
    *[("Gelu erf form", p, _fixed("Gelu", approximate="none")) for p in _gelu_erf_patterns()],
    *[("Gelu tanh form", p, _fixed("Gelu", approximate="tanh")) for p in _gelu_tanh_patterns()],
]
EPILOGUE_RULES: list[Rule] = [_rule(*rule) for rule in _EPILOGUES]


def epilogue_rules(check: FusionCheck | None = None, pack_biases: bool = True) -> list[Rule]:
    """The epilogue rules, each also asking ``check`` whether the target wants the fused node; without
    ``pack_biases``, a bias Add fuses as any other Add."""
    if check is None and pack_biases:
        return EPILOGUE_RULES
    return [_rule(*rule, check=check) for rule in _EPILOGUES if pack_biases or rule is not _PACK_EPILOGUE]


def _gelu_alone(m: Match) -> bool:
    return m.anchor.dtype in FLOAT_DTYPES and m.output.dtype == m.anchor.dtype and m.output.shape == m.anchor.shape


def _composite_gelu(approximate: str) -> Callable[[Graph, Match], list[Node]]:
    def build(graph: Graph, m: Match) -> list[Node]:
        first = next(iter(m.nodes.values()))   # (removed: its id stays unique until the pipeline renumbers)
        attrs = {"approximate": approximate, PARTS_ATTR: [n.op_type for n in m.nodes.values()]}
        return [Node(first.id, "Gelu", first.name or m.output.name, [m.anchor], [m.output], attrs, FUSED_DOMAIN)]
    return build


# A decomposed Gelu anywhere becomes one composite Gelu node (opset 20's op; hetc.ir.fused), which the
# epilogue rules may then fuse into the op before it. Run with the norms and attention, before the epilogues.
# The composite reads x and takes nothing from it, so x may have other readers and may be a graph input.
GELU_RULES: list[Rule] = [
    *[Rule("Gelu erf form", replace(p, keep_anchor=True), _gelu_alone, _composite_gelu("none"))
      for p in _gelu_erf_patterns()],
    *[Rule("Gelu tanh form", replace(p, keep_anchor=True), _gelu_alone, _composite_gelu("tanh"))
      for p in _gelu_tanh_patterns()],
]


def _sum_takes_add(m: Match) -> bool:
    """The anchor comes from a Sum that epilogue fusion left a node of its own (three or more operands, or
    none from a base op), and the Add keeps its shape and dtype: the Sum can add one more operand."""
    total, out, extra = m.anchor.producer, m.output, m.captured["e"]
    return (total is not None and total.op_type == "Sum" and total.domain == "" and total.when is None
            and len(total.outputs) == 1 and out.shape == m.anchor.shape and out.dtype == m.anchor.dtype
            and extra.dtype == m.anchor.dtype)


def _widen_sum(graph: Graph, m: Match) -> list[Node]:
    total = m.anchor.producer
    total.inputs = [*total.inputs, m.captured["e"]]
    total.outputs = [m.output]
    return []


# Run after the epilogue rules, which turn the Sums they can into epilogues: what is left is an n-ary kernel
# of its own, and an Add of its result (an MoE's residual after its experts' Sum) is one more operand of it.
SUM_RULES: list[Rule] = [
    Rule("Add of a Sum as one more operand", pattern(("Add", ["x", "?e"], "y")), _sum_takes_add, _widen_sum),
]


def _conv_bias_packable(m: Match) -> bool:
    """A float Conv's weight and bias are its own constants: the two may become one constant, one copy.
    Reshape's shape input (opset 5) writes it back as ONNX."""
    conv, weight, bias = m.nodes["y"], m.captured["w"], m.captured["b"]
    return (m.opset >= 5 and _own_constant(weight, conv, m) and _own_constant(bias, conv, m)
            and weight.dtype in FLOAT_DTYPES and bias.dtype == weight.dtype and len(weight.shape) >= 3
            and bias.shape == weight.shape[:1])


def _pack_conv_bias(graph: Graph, m: Match) -> list[Node]:
    conv, weight, bias = m.nodes["y"], m.captured["w"], m.captured["b"]
    w = np.asarray(weight.const)
    packed = new_constant(graph, f"{weight.name}_and_bias",
                          np.concatenate([w.reshape(w.shape[0], -1), np.asarray(bias.const).reshape(-1, 1)], axis=1))
    attrs = {**conv.attrs, PACKED_BIAS_ATTR: [int(d) for d in w.shape[1:]]}
    return [Node(conv.id, conv.op_type, conv.name, [m.anchor, packed], [m.output], attrs, FUSED_DOMAIN)]


# A Conv's bias is its own input, not an epilogue part: one row per output channel, its weights then its bias
# (hetc.ir.fused, "Packed bias"). Run before the epilogue rules, which then fuse onto the packed Conv.
PACK_RULES: list[Rule] = [
    Rule("Conv bias packed into the weight", pattern(("Conv", ["x", "?w", "?b"], "y"), keep_anchor=True),
         _conv_bias_packable, _pack_conv_bias),
]


def run_pack_biases(graph: Graph) -> int:
    """Pack each Conv's constant bias into its weight, in place; returns the number of rewrites."""
    return sum(run_rules(graph, PACK_RULES).values())


def run_merge_sums(graph: Graph) -> int:
    """Merge Adds into the Sums they read, in place; returns the number of rewrites."""
    return sum(run_rules(graph, SUM_RULES).values())


def run_fuse_epilogues(graph: Graph, check: FusionCheck | None = None, pack_biases: bool = True) -> int:
    """Fuse in place; returns the number of rewrites."""
    return sum(run_rules(graph, epilogue_rules(check, pack_biases)).values())


def fuse_epilogues(graph: Graph) -> Graph:
    """A copy of ``graph`` with every epilogue fused into its producer."""
    result = graph.copy()
    run_fuse_epilogues(result)
    return result
