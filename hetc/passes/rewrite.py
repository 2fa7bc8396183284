"""Small graph-editing helpers shared by the passes. Passes edit a private copy in place and call
``Graph.relink()`` once at the end."""
from __future__ import annotations

import numpy as np

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


def new_constant(graph: Graph, base: str, array: np.ndarray) -> Value:
    """A constant value holding ``array``, named after ``base`` (``unique_name``); the name is reserved in
    ``graph`` until the next relink, so two new constants never share it."""
    value = Value(unique_name(graph, base), str(array.dtype), tuple(array.shape), const=array)
    graph.values[value.name] = value
    return value


def renumber(graph: Graph) -> None:
    """Ids 0..n-1 in the stored topological order (later stages index arrays by node id)."""
    for index, node in enumerate(graph.nodes):
        node.id = index
