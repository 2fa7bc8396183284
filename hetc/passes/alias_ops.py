"""The model's own data-movement ops as alias ops (hetc.ir.tiles): views instead of copies.

* A static ``Split``, and a ``Slice`` with constant bounds and step 1, become ``Region`` nodes: each output is
  a view of the input's bytes (read in place, or by a strided DMA from where the input was born).
* A ``Concat`` becomes an ``Assemble`` when ``concat_copy_reason`` finds no reason against it: each producer
  then writes straight into its slice of the output, and nothing copies the parts together. An Assemble's
  output lives where the target joins values (``Target.join_memory``: DRAM, or an on-chip L2 the cores
  share), so a Concat is rewritten when its output must reach DRAM anyway, a graph output, or when the
  target joins it on chip (``joins_on_chip``); elsewhere its result stays in a scratchpad and it keeps its
  copy (reading and writing DRAM costs more than the copy: with every Concat joined in DRAM, SqueezeNet,
  ShuffleNet, the Inceptions and DenseNet-121 plan 0.5-11% slower on `edge-soc`; docs/benchmarks.md). A
  part may itself be assembled (a tiled node's output, or a Concat's): its parts then write straight into
  their slices of the outer output.
* A graph output's Concat is the KV cache: in ``present = Concat(past, new)`` the caller's ``past`` lies in
  the first rows of ``present`` and only the new rows are written. The graph's own readers of ``present``
  (the attention) read a local Concat instead, which runs where they do (``past`` prefetched there), not the
  Assemble, which is complete only once every part has reached DRAM. A Concat joined on chip needs no such
  twin: every reader reads the Assemble where it lives.

The pass runs after tiling (``hetc.pipeline``): the tiler cuts the original ops and sees no alias node.
"""
from __future__ import annotations

from typing import Callable

from hetc.ir import Graph, Node, Value
from hetc.ir.dtypes import itemsize
from hetc.ir.tiles import ASSEMBLE, REGION, TILE_DOMAIN, is_alias
from hetc.passes.view_regions import run_view_regions

# Whether the target joins a value (an Assemble's output) on chip: ``Target.join_memory`` is not DRAM.
JoinsOnChip = Callable[[Value], bool]


def concat_copy_reason(graph: Graph, node: Node, joins_on_chip: JoinsOnChip | None = None) -> str | None:
    """Why a Concat must copy its inputs, or None when each input may be written in place into its slice of
    the output (the one statement of that rule)."""
    out = node.outputs[0]
    outputs = {v.name for v in graph.outputs}
    if out.name not in outputs and not (joins_on_chip and joins_on_chip(out)):
        return ("its output is not a graph output and the target does not join it on chip (no shared L2, or "
                "the value is too large for it): an in-place Concat's output would live in DRAM")
    if out.is_host or out.nbytes == 0 or itemsize(out.dtype) < 1:
        return "its output is a host value, empty, or of a sub-byte type (a slice need not start on a byte)"
    names = [v.name if v is not None else None for v in node.inputs]
    inputs = {v.name for v in graph.inputs}
    for v in node.inputs:
        if v is None:
            return "an input is omitted"
        if v.is_const:
            return f"input '{v.name}' is a constant (read-only bytes, no task writes it into the output)"
        if v.is_host:
            return f"input '{v.name}' is a host value"
        if v.nbytes == 0:
            return f"input '{v.name}' is empty"
        if v.name in outputs:
            return f"input '{v.name}' is a graph output (the caller reads it at its own address)"
        if v.name in inputs and out.name not in outputs:
            return (f"input '{v.name}' is a graph input and the output is joined on chip (the caller writes the "
                    "input in DRAM, where only an output in DRAM could hold it in place)")
        if names.count(v.name) > 1:
            return f"input '{v.name}' appears twice (its bytes cannot lie in two slices)"
        if v.producer is not None and ((is_alias(v.producer) and v.producer.op_type != ASSEMBLE)
                                       or v.producer.has_subgraph):
            return f"input '{v.name}' is made by a {v.producer.op_type} (it has no bytes of its own to place)"
        if any(c is not node and (c.op_type == "Concat" or (is_alias(c) and c.op_type == ASSEMBLE))
               for c in v.consumers):
            return f"input '{v.name}' feeds another Concat (its bytes cannot lie in two outputs)"
    return None


def run_alias_ops(graph: Graph, joins_on_chip: JoinsOnChip | None = None) -> int:
    """Rewrite in place (``graph`` is relinked); returns the number of nodes rewritten."""
    nodes: list[Node] = []
    next_id = graph.next_node_id()
    changed = 0
    outputs = {v.name for v in graph.outputs}
    for node in graph.nodes:
        made = _alias_nodes(graph, node, outputs, next_id, joins_on_chip)
        if made is None:
            nodes.append(node)
            continue
        if made[0].op_type == "Concat":         # an in-place Concat's readers read its local twin
            out, local = node.outputs[0], made[0].outputs[0]
            for reader in out.consumers:
                reader.inputs = [local if v is out else v for v in reader.inputs]
        nodes += made
        next_id += len(made) - 1
        changed += 1
    if changed:
        graph.nodes = nodes
        graph.relink()
        changed += run_view_regions(graph)   # a Reshape of a Split's output viewed in place too
    return changed


def alias_ops(graph: Graph, joins_on_chip: JoinsOnChip | None = None) -> Graph:
    """A copy of ``graph`` with ``run_alias_ops`` applied, or ``graph`` itself when it has nothing to rewrite
    (no copy: a model without such ops leaves no discarded graph behind). ``joins_on_chip``: the target's
    answer (None: every joined value lives in DRAM)."""
    outputs = {v.name for v in graph.outputs}
    if all(_alias_nodes(graph, node, outputs, 0, joins_on_chip) is None for node in graph.nodes):
        return graph
    result = graph.copy()
    run_alias_ops(result, joins_on_chip)
    return result


def _alias_nodes(graph: Graph, node: Node, outputs: set[str], next_id: int,
                 joins_on_chip: JoinsOnChip | None) -> list[Node] | None:
    """The alias nodes replacing ``node`` (the first keeps its id, the others number from ``next_id``), or
    None when it stays."""
    if node.domain not in ("", "ai.onnx") or node.has_subgraph:
        return None
    if node.op_type in ("Split", "Slice"):
        bounds = _view_bounds(node)
        if bounds is None or not _viewable(graph, node, outputs, joins_on_chip):
            return None
        return [Node(node.id if k == 0 else next_id + k - 1, REGION, node.name if k == 0 else f"{node.name}/{k}",
                     [node.inputs[0]], [out], {"starts": list(starts), "ends": list(ends)}, TILE_DOMAIN)
                for k, (out, (starts, ends)) in enumerate(zip(node.outputs, bounds))]
    if node.op_type == "Concat" and concat_copy_reason(graph, node, joins_on_chip) is None:
        out = node.outputs[0]
        axis = int(node.attrs.get("axis", 0)) % len(out.shape)
        made = [Node(node.id, ASSEMBLE, node.name, list(node.inputs), [out], {"axis": axis}, TILE_DOMAIN)]
        if out.name in outputs and out.consumers and not any(c.has_subgraph for c in out.consumers):
            # The graph's own readers (a KV cache's attention) keep a Concat of their own: it runs where they
            # do, with past brought in ahead of time, where reading the Assemble in DRAM would wait for every
            # part to be written there first.
            name, k = f"{out.name}__local", 1
            while name in graph.values:
                name, k = f"{out.name}__local{k}", k + 1
            local = Value(name, out.dtype, tuple(out.shape))
            made.insert(0, Node(next_id, "Concat", f"{node.name}/local", list(node.inputs), [local],
                                dict(node.attrs), node.domain))
        return made
    return None


def _viewable(graph: Graph, node: Node, outputs: set[str], joins_on_chip: JoinsOnChip | None) -> bool:
    """A view's output lives where its input was born and has no buffer of its own for the caller to read;
    nor for an Assemble to write in place (a tile's one-part Assemble to DRAM, an in-place Concat): its bytes
    already lie in its input's, and a buffer lies in one other at most."""
    data = node.inputs[0] if node.inputs else None
    if data is None or data.is_const or data.is_host or data.nbytes == 0 or itemsize(data.dtype) < 1:
        return False
    return all(not v.is_host and v.name not in outputs and v.nbytes > 0
               and not _written_in_place(graph, v, joins_on_chip) for v in node.outputs)


def _written_in_place(graph: Graph, v: Value, joins_on_chip: JoinsOnChip | None) -> bool:
    """Whether an Assemble, or a Concat that becomes one, writes ``v`` into its output's bytes."""
    return any((is_alias(c) and c.op_type == ASSEMBLE)
               or (c.op_type == "Concat" and concat_copy_reason(graph, c, joins_on_chip) is None)
               for c in v.consumers)


def _view_bounds(node: Node) -> list[tuple[tuple[int, ...], tuple[int, ...]]] | None:
    """Per output, its (starts, ends) in the input (full rank, step 1), or None when the op is not a static
    step-1 view."""
    data = node.inputs[0]
    if data is None or not data.shape:
        return None
    shape = tuple(int(d) for d in data.shape)
    rank = len(shape)
    if node.op_type == "Split":
        axis = int(node.attrs.get("axis", 0)) % rank
        starts, at = [], 0
        for out in node.outputs:
            if len(out.shape) != rank:
                return None
            start = [0] * rank
            start[axis] = at
            end = list(shape)
            end[axis] = at + int(out.shape[axis])
            starts.append((tuple(start), tuple(end)))
            at += int(out.shape[axis])
        return starts if at == shape[axis] else None
    args = [None if v is None else v.const for v in node.inputs[1:5]]
    if any(v is not None and not v.is_const for v in node.inputs[1:5]) or len(node.inputs) < 3 or \
            args[0] is None or args[1] is None:
        return None
    begin = [int(x) for x in args[0].reshape(-1)]
    end = [int(x) for x in args[1].reshape(-1)]
    axes = [int(x) % rank for x in args[2].reshape(-1)] if len(args) > 2 and args[2] is not None \
        else list(range(len(begin)))
    steps = [int(x) for x in args[3].reshape(-1)] if len(args) > 3 and args[3] is not None else [1] * len(begin)
    if not (len(begin) == len(end) == len(axes) == len(steps)) or any(s != 1 for s in steps) or \
            len(set(axes)) != len(axes):
        return None
    lo, hi = [0] * rank, list(shape)
    for a, b, e in zip(axes, begin, end):
        dim = shape[a]
        b = b + dim if b < 0 else b
        e = e + dim if e < 0 else e
        lo[a], hi[a] = min(max(b, 0), dim), min(max(e, 0), dim)
    if tuple(h - l for l, h in zip(lo, hi)) != tuple(int(d) for d in node.outputs[0].shape):
        return None
    return [(tuple(lo), tuple(hi))]
