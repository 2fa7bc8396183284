"""Dead-code elimination: drop nodes none of whose outputs reaches a graph output."""
from __future__ import annotations

from hetc.ir import Graph, Node


def eliminate_dead_code(graph: Graph) -> Graph:
    """A copy of ``graph`` without dead nodes."""
    result = graph.copy()
    run_eliminate_dead_code(result)
    return result


def run_eliminate_dead_code(graph: Graph) -> int:
    """Eliminate in place; returns the number of nodes removed. Graph inputs are kept even if unused:
    they are the model's interface."""
    needed = {v.name for v in graph.outputs}
    live: list[Node] = []
    for node in reversed(graph.nodes):
        if not any(v.name in needed for v in node.outputs):
            continue
        live.append(node)
        needed.update(v.name for v in node.reads)
        if node.has_subgraph:
            needed.update(node.outer_scope_names())
    removed = len(graph.nodes) - len(live)
    if removed:
        graph.nodes = list(reversed(live))
        graph.relink()
    return removed
