"""Predicate a router's experts: a node whose result is multiplied by a routing gate, and the work only it
needs, run only when the router picks them (hetc.ir.predicates states what that means).

The rule fires on a *gated* node (``gating_operand``) when the node with its cone reads a weight (an expert:
work worth skipping) and the expert is likely to be skipped (``skip_chance``: its gate computed by a ``TopK``
router that often leaves it out of the whole batch). Predication delays an expert's weights until the router
has run, which pays only then: the rule wants a chance of at least ``MIN_SKIP_CHANCE`` (a decode step's one
token, top-2 of 8: 0.75; a 16-token batch: 0.01, and dense is better). The cone is every node whose outputs
only the gated node and the cone read, none of them a graph output nor needed to compute the gate itself.
"""
from __future__ import annotations

from hetc.ir import Graph, Node
from hetc.ir.predicates import ancestors, gating_operand, skip_chance

MIN_SKIP_CHANCE = 0.5


def run_predicate_experts(graph: Graph) -> int:
    """Set ``when`` on every gated expert and its cone, in place; returns the number of nodes predicated."""
    outputs = {v.name for v in graph.outputs}
    predicated = 0
    for node in list(reversed(graph.nodes)):
        gate = gating_operand(node)
        if node.when is not None or gate is None or skip_chance(gate) < MIN_SKIP_CHANCE:
            continue
        cone = _cone(graph, node, ancestors(gate), outputs)
        if not any(v.is_const and v.numel > 1 for n in [node, *cone] for v in n.present_inputs):
            continue
        for member in [node, *cone]:
            member.when = gate
        predicated += 1 + len(cone)
    if predicated:
        graph.relink()
    return predicated


def _cone(graph: Graph, gated: Node, upstream: dict[int, Node], outputs: set[str]) -> list[Node]:
    """The unpredicated nodes whose every output is read only by ``gated`` and the cone (see the module
    docstring), in reverse topological order."""
    members = {gated.id}
    cone: list[Node] = []
    position = {n.id: i for i, n in enumerate(graph.nodes)}
    for node in reversed(graph.nodes[:position[gated.id]]):
        if node.when is not None or node.id in upstream or node.has_subgraph or not node.outputs:
            continue
        if all(v.name not in outputs and v.consumers and all(c.id in members for c in v.consumers)
               for v in node.outputs):
            members.add(node.id)
            cone.append(node)
    return cone
