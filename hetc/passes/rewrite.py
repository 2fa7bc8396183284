"""Small graph-editing helpers shared by the passes. Passes edit a private copy in place and call
``Graph.relink()`` once at the end."""
from __future__ import annotations

from typing import Any, Iterator

from hetc.ir import Graph, Node, Value


def replace_uses(old: Value, new: Value) -> None:
    """Make every consumer of ``old`` read ``new`` instead (graph outputs are the caller's business)."""
    for consumer in list(old.consumers):
        consumer.inputs = [new if v is old else v for v in consumer.inputs]
        new.consumers.append(consumer)
    old.consumers = []


def unique_name(graph: Graph, base: str) -> str:
    """``base``, or ``base_1``, ``base_2``... whichever no value of ``graph`` uses yet."""
    name, suffix = base, 0
    while name in graph.values:
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def renumber(graph: Graph) -> None:
    """Ids 0..n-1 in the stored topological order (later stages index arrays by node id)."""
    for index, node in enumerate(graph.nodes):
        node.id = index


def subgraph_references(node: Node) -> set[str]:
    """Names a node's subgraphs read (possibly from the outer scope); they keep their producers alive."""
    names: set[str] = set()
    for graph in _graphs(node.attrs.values()):
        names.update(_graph_references(graph))
    return names


def _graphs(attrs: Any) -> Iterator[Any]:
    for value in attrs:
        if type(value).__name__ == "GraphProto":
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if type(v).__name__ == "GraphProto")


def _graph_references(graph: Any) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        names.update(n for n in node.input if n)
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                names.update(_graph_references(sub))
    return names
