"""Predicate a router's experts: a node whose result is multiplied by a routing gate, and the work only it
needs, run only when the router picks them (hetc.ir.predicates states what that means).

The rule fires on a *gated* node (``gating_operand``) when its gate is computed from a ``TopK`` (a router: the
gates of the experts it did not choose are zero), the node with its cone reads a weight (an expert: work
worth skipping), and the expert is likely to be skipped: predication delays its weights until the router has
run, which pays only if the whole batch often leaves it out. With ``k`` of ``E`` experts chosen per row and
``rows`` rows, uniform routing leaves it out with probability ``(1 - k / E) ** rows``; the rule wants at least
``MIN_SKIP_CHANCE`` (a decode step's one token, top-2 of 8: 0.75; a 16-token batch: 0.01, dense is better).
The cone is every node whose outputs only the gated node and the cone read, none of them a graph output nor
needed to compute the gate itself.
"""
from __future__ import annotations

from hetc.ir import Graph, Node, Value
from hetc.ir.predicates import gating_operand

ROUTING_OPS = frozenset({"TopK"})
MIN_SKIP_CHANCE = 0.5


def run_predicate_experts(graph: Graph) -> int:
    """Set ``when`` on every gated expert and its cone, in place; returns the number of nodes predicated."""
    outputs = {v.name for v in graph.outputs}
    predicated = 0
    for node in list(reversed(graph.nodes)):
        gate = gating_operand(node)
        if node.when is not None or gate is None:
            continue
        upstream = _ancestors(gate)
        routers = [n for n in upstream.values() if n.op_type in ROUTING_OPS]
        if not routers or max(skip_chance(r, gate) for r in routers) < MIN_SKIP_CHANCE:
            continue
        cone = _cone(graph, node, upstream, outputs)
        if not any(v.is_const and v.numel > 1 for n in [node, *cone] for v in n.present_inputs):
            continue
        for member in [node, *cone]:
            member.when = gate
        predicated += 1 + len(cone)
    if predicated:
        graph.relink()
    return predicated


def skip_chance(router: Node, gate: Value) -> float:
    """The probability that uniform top-k routing by ``router`` (a TopK) leaves every row of ``gate`` out:
    ``(1 - k / E) ** rows``, with E the size of the TopK's axis and the rows those of the gate column; 0 when
    k is not a constant."""
    k_input = router.inputs[1] if len(router.inputs) > 1 else None
    if k_input is None or not k_input.is_const:
        return 0.0
    k = int(k_input.const.reshape(-1)[0])
    scores = router.inputs[0]
    experts = scores.shape[router.attr("axis", -1)] if scores is not None and scores.shape else 0
    if experts <= k:
        return 0.0
    return (1.0 - k / experts) ** max(1, gate.numel)


def _ancestors(value: Value) -> dict[int, Node]:
    """The nodes ``value`` is computed from (its producer and theirs, transitively)."""
    found: dict[int, Node] = {}
    stack = [value]
    while stack:
        producer = stack.pop().producer
        if producer is not None and producer.id not in found:
            found[producer.id] = producer
            stack.extend(producer.reads)
    return found


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
