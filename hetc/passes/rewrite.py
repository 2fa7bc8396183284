"""Small graph-editing helpers shared by the passes. Passes edit a private copy in place and call
``Graph.relink()`` once at the end."""
from __future__ import annotations

from hetc.ir import Graph, Value


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
