"""The graph IR: values with static shapes, nodes with plain-Python attributes, a graph that keeps the
producer/consumer links consistent.

A ``Graph`` is built once from its node list (``Graph.build``) and treated as immutable by every stage after
the passes; passes work on ``graph.copy()`` and return a new graph.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import networkx as nx
import numpy as np

from hetc.ir.dtypes import nbytes as _nbytes
from hetc.ir.host import HostType

# ONNX ops whose bodies are subgraphs; hetc keeps them opaque and runs them on the CPU.
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


@dataclass(eq=False)
class Value:
    """A value: a graph input, a constant, or the output of exactly one node.

    Either a *device tensor* (``host is None``: dtype, static shape, byte layout, planned in a memory) or a
    *host value* (``host`` is its ONNX type: a sequence, an optional, a string tensor or a tensor of run-time
    shape), which the host CPU holds in its own heap; see ``hetc.ir.host``. For a host value ``dtype`` is the
    innermost element dtype, ``shape`` the static shape of a host tensor whose shape is known and ``()``
    otherwise, and ``nbytes`` is 0: it occupies no planned memory, costs no transfer and no cost-model byte.
    Host values are never constants."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    const: np.ndarray | None = None
    producer: "Node | None" = field(default=None, repr=False)
    consumers: list["Node"] = field(default_factory=list, repr=False)
    host: HostType | None = None

    @property
    def is_host(self) -> bool:
        return self.host is not None

    @property
    def kind(self) -> str:
        """"tensor" (a device tensor) or "host" (a host value)."""
        return "host" if self.host is not None else "tensor"

    @property
    def nbytes(self) -> int:
        if self.host is not None:
            return 0
        return _nbytes(self.dtype, self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        if self.host is not None:
            return f"Value(host {self.name}: {self.host})"
        dims = "x".join(map(str, self.shape)) or "scalar"
        kind = "const " if self.is_const else ""
        return f"Value({kind}{self.name}: {self.dtype}[{dims}])"


@dataclass(frozen=True)
class TileRef:
    """Which piece of which original node a tile node is: tile ``index`` of ``count`` of node ``of`` (its
    name), cut along ``axis`` ("rows", "channels", "M", "N", "K", or an axis name for other ops), and the
    tiling's one-line rationale ``why`` as the tiler chose it (shown in placement tables and ``hetc inspect``)."""

    of: str
    index: int
    count: int
    axis: str
    why: str = ""


@dataclass(eq=False)
class Node:
    """One operator application. ``inputs`` may hold ``None`` for an omitted optional input."""

    id: int
    op_type: str
    name: str
    inputs: list[Value | None]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    tile: "TileRef | None" = None   # set on the pieces the tiler cut a node into (hetc.ir.tiles)
    # The node's predicate (hetc.ir.predicates): it runs only when this value has a nonzero element, and reads
    # it to decide, like an input. None: the node always runs.
    when: "Value | None" = None
    # Per-node results later stages cache (cost, tile plans), keyed by the stage, each checked against the
    # node's signature. On the node rather than in a WeakKeyDictionary: a Ctrl-C landing in such a dictionary's
    # removal callback is swallowed ("Exception ignored"), and the build ran on. A copy starts empty.
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_subgraph(self) -> bool:
        return self.op_type in SUBGRAPH_OPS or any(_is_graph_attr(v) for v in self.attrs.values())

    @property
    def present_inputs(self) -> list[Value]:
        return [v for v in self.inputs if v is not None]

    @property
    def reads(self) -> list[Value]:
        """Every value the node reads: its present inputs, then its predicate when that is not one of them."""
        ins = self.present_inputs
        if self.when is not None and all(v is not self.when for v in ins):
            return ins + [self.when]
        return ins

    def outer_scope_names(self) -> list[str]:
        """Names of outer values the node's subgraphs read without listing them as inputs (ONNX's implicit
        inputs of If/Loop/Scan). The graph links them like inputs: the node is one of their consumers."""
        names: set[str] = set()
        for value in self.attrs.values():
            for sub in (value if isinstance(value, list) else [value]):
                if type(sub).__name__ == "GraphProto":
                    names |= _free_names(sub)
        return sorted(names)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def __repr__(self) -> str:
        ins = ", ".join(v.name if v is not None else "" for v in self.inputs)
        outs = ", ".join(v.name for v in self.outputs)
        return f"Node(#{self.id} {self.op_type} '{self.name}': ({ins}) -> ({outs}))"


def _free_names(graph: Any) -> set[str]:
    """Names a GraphProto (recursively) reads but does not define."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                used |= _free_names(sub)
        defined.update(node.output)
    used.update(v.name for v in graph.output)
    return used - defined


def _is_graph_attr(value: Any) -> bool:
    return type(value).__name__ == "GraphProto" or (
        isinstance(value, list) and bool(value) and type(value[0]).__name__ == "GraphProto")


@dataclass(eq=False)
class Graph:
    """A whole model. ``nodes`` is kept in a topological order; ``values`` maps every name to its Value."""

    name: str
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]
    values: dict[str, Value]
    opset: dict[str, int]
    metadata: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, name: str, nodes: Iterable[Node], inputs: Iterable[Value], outputs: Iterable[Value],
              opset: dict[str, int], metadata: dict[str, str] | None = None) -> "Graph":
        """Make a graph from nodes whose Values are already shared objects; links and order are derived."""
        graph = cls(name=name, nodes=list(nodes), inputs=list(inputs), outputs=list(outputs), values={},
                    opset=dict(opset), metadata=dict(metadata or {}))
        graph.relink()
        return graph

    def relink(self) -> None:
        """Recompute producer/consumer links, the value table and the topological order after an edit.

        Values no node, input or output mentions any more are dropped from ``values``."""
        values: dict[str, Value] = {}
        for v in self.inputs:
            v.producer, v.consumers = None, []
            values[v.name] = v
        for node in self.nodes:
            for v in node.reads:
                if v.name not in values:
                    v.producer, v.consumers = None, []
                    values[v.name] = v
            for v in node.outputs:
                v.consumers = []
                values[v.name] = v
        implicit = {node.id: node.outer_scope_names() for node in self.nodes if node.has_subgraph}
        for names in implicit.values():  # constants only a subgraph reads must not be dropped
            for name in names:
                if name not in values and name in self.values:
                    v = self.values[name]
                    v.producer, v.consumers = None, []
                    values[name] = v
        for node in self.nodes:
            for v in node.outputs:
                v.producer = node
            for v in node.reads:
                v.consumers.append(node)
            for name in implicit.get(node.id, ()):
                if name in values and node not in values[name].consumers:
                    values[name].consumers.append(node)
        for v in self.outputs:
            values.setdefault(v.name, v)
        self.values = values
        self.nodes = self._topological(self.nodes)

    @staticmethod
    def _topological(nodes: list[Node]) -> list[Node]:
        """Kahn's algorithm, stable with respect to the given order (keeps ONNX's order when it is valid)."""
        producer_of = {v.name: n for n in nodes for v in n.outputs}
        indegree = {n.id: 0 for n in nodes}
        users: dict[int, list[Node]] = {n.id: [] for n in nodes}
        for n in nodes:
            names = [v.name for v in n.reads] + (n.outer_scope_names() if n.has_subgraph else [])
            preds = {producer_of[name].id for name in names if name in producer_of} - {n.id}
            indegree[n.id] = len(preds)
            for p in preds:
                users[p].append(n)
        position = {n.id: i for i, n in enumerate(nodes)}
        ready = [(position[n.id], n.id, n) for n in nodes if indegree[n.id] == 0]
        heapq.heapify(ready)
        order: list[Node] = []
        while ready:
            _, _, n = heapq.heappop(ready)
            order.append(n)
            for u in users[n.id]:
                indegree[u.id] -= 1
                if indegree[u.id] == 0:
                    heapq.heappush(ready, (position[u.id], u.id, u))
        if len(order) != len(nodes):
            stuck = [n.name or n.op_type for n in nodes if indegree[n.id] > 0][:5]
            raise ValueError(f"graph has a cycle through {stuck}")
        return order

    # ------------------------------------------------------------------ queries
    def topo_order(self) -> list[Node]:
        """Nodes in a topological order (the stored order)."""
        return list(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, node_id: int) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def node_map(self) -> dict[int, Node]:
        return {n.id: n for n in self.nodes}

    @property
    def constants(self) -> list[Value]:
        """Constant values (weights), in first-use order."""
        seen: dict[str, Value] = {}
        for n in self.nodes:
            for v in n.present_inputs:
                if v.is_const and v.name not in seen:
                    seen[v.name] = v
        for v in self.outputs:
            if v.is_const:
                seen.setdefault(v.name, v)
        return list(seen.values())

    def next_node_id(self) -> int:
        return max((n.id for n in self.nodes), default=-1) + 1

    def predecessors(self, node: Node) -> list[Node]:
        seen: dict[int, Node] = {}
        for v in node.reads:
            if v.producer is not None:
                seen.setdefault(v.producer.id, v.producer)
        return list(seen.values())

    def successors(self, node: Node) -> list[Node]:
        seen: dict[int, Node] = {}
        for v in node.outputs:
            for c in v.consumers:
                seen.setdefault(c.id, c)
        return list(seen.values())

    def to_networkx(self) -> nx.MultiDiGraph:
        """Nodes keyed by node id (attributes op, name); one edge per value flowing between two nodes
        (attributes value, bytes), including values a subgraph reads from the outer scope."""
        g = nx.MultiDiGraph(name=self.name)
        for n in self.nodes:
            g.add_node(n.id, op=n.op_type, name=n.name)
        for n in self.nodes:
            read = n.reads + ([self.values[name] for name in n.outer_scope_names() if name in self.values]
                         if n.has_subgraph else [])
            for v in read:
                if v.producer is not None:
                    g.add_edge(v.producer.id, n.id, key=v.name, value=v.name, bytes=v.nbytes)
        return g

    def copy(self) -> "Graph":
        """A deep copy whose Values and Nodes are new objects; constant arrays, attribute tensors and
        subgraph protos are shared (read-only). Built structurally, not with ``copy.deepcopy``, which
        recurses along producer/consumer links and overflows the stack on deep models."""
        twins: dict[int, tuple[Value, Value]] = {}  # id(original) -> (original, twin)

        def clone(v: Value) -> Value:
            if id(v) not in twins:
                twins[id(v)] = (v, Value(v.name, v.dtype, tuple(v.shape), const=v.const, host=v.host))
            return twins[id(v)][1]

        node_twins = {
            id(n): Node(n.id, n.op_type, n.name, [None if v is None else clone(v) for v in n.inputs],
                        [clone(v) for v in n.outputs],
                        {k: list(a) if isinstance(a, list) else a for k, a in n.attrs.items()}, n.domain,
                        n.tile, None if n.when is None else clone(n.when))
            for n in self.nodes}
        values = {name: clone(v) for name, v in self.values.items()}
        inputs, outputs = [clone(v) for v in self.inputs], [clone(v) for v in self.outputs]
        for original, twin in twins.values():
            twin.producer = node_twins.get(id(original.producer))
            twin.consumers = [node_twins[id(c)] for c in original.consumers if id(c) in node_twins]
        return Graph(name=self.name, nodes=[node_twins[id(n)] for n in self.nodes], inputs=inputs,
                     outputs=outputs, values=values, opset=dict(self.opset), metadata=dict(self.metadata))

    # ------------------------------------------------------------------ statistics and printing
    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            hist[n.op_type] = hist.get(n.op_type, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def weight_bytes(self) -> int:
        return sum(v.nbytes for v in self.constants)

    def __str__(self) -> str:
        def fmt(v: Value | None) -> str:
            if v is None:
                return "_"
            if v.host is not None:
                return f"%{v.name}:host {v.host}"
            dims = "x".join(map(str, v.shape)) or "()"
            return f"%{v.name}:{v.dtype}[{dims}]" + ("=const" if v.is_const else "")

        lines = [f"graph {self.name} ({len(self.nodes)} nodes, opset {self.opset.get('', '?')})"]
        lines += [f"  input  {fmt(v)}" for v in self.inputs]
        for n in self.nodes:
            attrs = ", ".join(f"{k}={_short(a)}" for k, a in sorted(n.attrs.items()))
            outs = ", ".join(fmt(v) for v in n.outputs)
            ins = ", ".join(fmt(v) for v in n.inputs)
            lines.append(f"  #{n.id:<4} {outs} = {n.op_type}({ins})" + (f" {{{attrs}}}" if attrs else "")
                         + (f" if %{n.when.name}" if n.when is not None else ""))
        lines += [f"  output {fmt(v)}" for v in self.outputs]
        return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"tensor{list(value.shape)}"
    if _is_graph_attr(value):
        return "<graph>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
