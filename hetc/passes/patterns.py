"""Rewrite rules as data, and the one driver that runs them.

A ``Rule`` is a ``Pattern`` (a small DAG of ops hanging off an *anchor* value ``x``), a condition on the
match and a replacement builder. A pattern lists its nodes in match order; each names its op (its type in the
default domain, ``domain:op`` in another: ``hetc.tile:Region``) and its inputs with tokens:

* ``"x"``: the anchor; ``"t"`` (any other identifier): the output of an earlier pattern node;
* a float: a constant scalar (any shape of one element) equal to it within 1e-5 relative;
* ``"?e"``: any tensor value from outside the match, captured as ``e`` (bias, residual, mask...); ``"?e?"``: the
  same, or an omitted input (captured as None);
* ``"#lo"``: a constant scalar, captured as ``lo``; ``"#lo?"``: the same, or an omitted input.

Add and Mul match either operand order. A match holds only when the anchor and every intermediate value are
read by the matched nodes alone and are not graph outputs (they disappear), so a rewrite never duplicates work.
A pattern that *keeps* its anchor (``keep_anchor``: a normalisation reads its input and the residual stream
reads it too) is tried at graph inputs as well, and the anchor may have other readers. A builder may also
absorb nodes upstream of the anchor (``Match.absorbed``: the attention rule takes the Q.K^T MatMul, the
Transpose of K, the head repeats) when it has checked that nothing else reads their outputs.
The driver tries every rule at every value, in table order, until no rule applies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from hetc.ir import Graph, Node, Value

Token = Any   # str | float
COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min", "Sum"})


@dataclass(frozen=True)
class PNode:
    """One pattern node: ``output = op(*inputs)``."""

    op: str
    inputs: tuple[Token, ...]
    output: str


@dataclass(frozen=True)
class Pattern:
    nodes: tuple[PNode, ...]
    output: str   # the pattern value the match produces (replaces the last node's output)
    keep_anchor: bool = False   # the anchor survives the rewrite (see the module docstring)


def pattern(*nodes: tuple[str, Sequence[Token], str], keep_anchor: bool = False) -> Pattern:
    """``pattern(("Div", ["x", 1.41], "a"), ("Erf", ["a"], "b"), ...)``; the last node's output is the result."""
    built = tuple(PNode(op, tuple(ins), out) for op, ins, out in nodes)
    return Pattern(built, built[-1].output, keep_anchor)


@dataclass
class Match:
    anchor: Value
    nodes: dict[str, Node] = field(default_factory=dict)        # pattern output name -> matched node
    values: dict[str, Value] = field(default_factory=dict)      # pattern value name -> graph value
    captured: dict[str, Any] = field(default_factory=dict)      # "?e" -> Value, "#lo" -> float | None
    absorbed: list[Node] = field(default_factory=list)          # upstream nodes a builder consumed too
    graph_outputs: frozenset[str] = frozenset()                 # names of the graph's outputs
    opset: int = 0                                              # the graph's default-domain opset

    @property
    def output(self) -> Value:
        return self.values[self._output]

    _output: str = ""


@dataclass(frozen=True)
class Rule:
    """``pattern`` at an anchor, if ``where(match)``, is rewritten by ``build(graph, match)``: the matched
    nodes are removed, the builder edits surviving nodes in place and returns new nodes to add."""

    name: str
    pattern: Pattern
    where: Callable[[Match], bool]
    build: Callable[[Graph, Match], list[Node]]


def qualified_op(node: Node) -> str:
    """How a pattern names a node's op: its op type in the default domain, ``domain:op`` in any other."""
    return node.op_type if node.domain == "" else f"{node.domain}:{node.op_type}"


def _scalar(v: Value | None) -> float | None:
    if v is None or not v.is_const or v.host is not None or np.asarray(v.const).size != 1:
        return None
    item = np.asarray(v.const).reshape(-1)[0]
    return float(item) if np.issubdtype(np.asarray(item).dtype, np.number) else None


def _bind(token: Token, actual: Value | None, m: Match) -> bool:
    if isinstance(token, (int, float)) and not isinstance(token, bool):
        value = _scalar(actual)
        return value is not None and abs(value - token) <= 1e-5 * max(1.0, abs(token))
    if token.startswith("?"):
        key = token[1:].rstrip("?")
        if actual is None and token.endswith("?") and len(token) > 2:
            m.captured[key] = None
            return True
        if actual is None or actual.host is not None or actual in m.values.values():
            return False
        if key in m.captured:
            return m.captured[key] is actual
        m.captured[key] = actual
        return True
    if token.startswith("#"):
        key, optional = token[1:].rstrip("?"), token.endswith("?")
        if actual is None:
            m.captured[key] = None
            return optional
        value = _scalar(actual)
        m.captured[key] = value
        return value is not None
    return actual is not None and m.values.get(token) is actual


def _inputs(node: Node) -> list[Value | None]:
    inputs = list(node.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    return inputs


def _try_node(pn: PNode, node: Node, m: Match) -> Match | None:
    inputs = _inputs(node)
    tokens = list(pn.inputs)
    while len(inputs) < len(tokens) and isinstance(tokens[-1], str) and tokens[-1].endswith("?"):
        inputs.append(None)
    if qualified_op(node) != pn.op or len(node.outputs) != 1 or len(inputs) != len(tokens):
        return None
    orders = [inputs] + ([inputs[::-1]] if pn.op in COMMUTATIVE and len(inputs) == 2 else [])
    for order in orders:
        trial = Match(m.anchor, dict(m.nodes), dict(m.values), dict(m.captured), _output=m._output)
        if all(_bind(t, v, trial) for t, v in zip(tokens, order)):
            trial.nodes[pn.output] = node
            trial.values[pn.output] = node.outputs[0]
            return trial
    return None


def _search(pat: Pattern, index: int, m: Match, dead: set[int]) -> Match | None:
    if index == len(pat.nodes):
        return m if _contained(pat, m) else None
    pn = pat.nodes[index]
    used = {id(n) for n in m.nodes.values()} | dead
    readers = [m.values[t] for t in pn.inputs if isinstance(t, str) and t in m.values]
    candidates = {id(c): c for v in readers for c in v.consumers if id(c) not in used}
    for node in candidates.values():
        trial = _try_node(pn, node, m)
        if trial is not None:
            found = _search(pat, index + 1, trial, dead)
            if found is not None:
                return found
    return None


def _contained(pat: Pattern, m: Match) -> bool:
    """The anchor and the intermediates are read only inside the match and are not graph outputs."""
    inside = {id(n) for n in m.nodes.values()}
    internal = [] if pat.keep_anchor else [m.anchor]
    internal += [m.values[p.output] for p in pat.nodes if p.output != pat.output]
    return all(id(c) in inside for v in internal for c in v.consumers)


def match_at(pat: Pattern, anchor: Value, graph_outputs: set[str], dead: set[int] | None = None) -> Match | None:
    """The first match of ``pat`` anchored at ``anchor``, or None. Nodes whose id is in ``dead`` (removed by
    an earlier rewrite of the current sweep) are never matched."""
    if (anchor.name in graph_outputs and not pat.keep_anchor) or anchor.host is not None:
        return None
    m = Match(anchor, values={"x": anchor}, _output=pat.output)
    found = _search(pat, 0, m, dead or set())
    if found is None:
        return None
    found.graph_outputs = frozenset(graph_outputs)
    intermediates = [found.values[p.output] for p in pat.nodes if p.output != pat.output]
    if any(v.name in graph_outputs for v in intermediates):
        return None
    return found


def run_rules(graph: Graph, rules: Sequence[Rule]) -> dict[str, int]:
    """Apply ``rules`` in place until none matches; returns how often each fired.

    The graph is swept rule by rule; the matched nodes are removed at the end of the sweep (a node a rewrite
    consumed is never matched again in the same sweep) and the graph is relinked once per sweep, so a sweep
    costs one pass over the nodes per rule. A builder edits surviving nodes in place (a fused producer
    takes the match's output) and returns any new nodes to insert."""
    fired = {rule.name: 0 for rule in rules}
    while True:
        dead: set[int] = set()
        added: list[Node] = []
        outputs = {v.name for v in graph.outputs}
        # Anchors by the op types reading them: a pattern's first node reads the anchor (nothing else is bound
        # yet), so a rule is tried only where a reader has that op. Links change only at the end of a sweep.
        read_by: dict[str, list[Value]] = {}
        for anchor in [v for v in graph.inputs if not v.is_const] + [
                v for node in graph.nodes for v in node.outputs]:   # (a Split's halves too)
            for op in {qualified_op(c) for c in anchor.consumers}:
                read_by.setdefault(op, []).append(anchor)
        for rule in rules:
            for anchor in read_by.get(rule.pattern.nodes[0].op, []):
                if anchor.producer is None and not rule.pattern.keep_anchor:
                    continue   # only a kept anchor may be a graph input
                if anchor.producer is not None and id(anchor.producer) in dead:
                    continue
                m = match_at(rule.pattern, anchor, outputs, dead)
                if m is not None:
                    m.opset = graph.opset.get("", graph.opset.get("ai.onnx", 0))
                if m is None or not rule.where(m):
                    continue
                added += rule.build(graph, m)
                dead |= {id(n) for n in [*m.nodes.values(), *m.absorbed]}
                fired[rule.name] += 1
        if not dead:
            return fired
        graph.nodes = [n for n in graph.nodes if id(n) not in dead] + added
        graph.relink()
