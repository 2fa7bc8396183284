"""``tile_graph``: the graph with every node the planner cuts replaced by its tiles, joined by alias nodes
(hetc.ir.tiles): a ``Region`` per activation box a tile reads (halo included; one per distinct box, shared by
the tiles that read it), constants sliced at compile time into new constants, the K tiles of a matrix
product chained through fused MatMul/Gemm+Add nodes, and one ``Assemble`` per cut output axis making the
original output value (same name, shape and dtype; a cut along two axes nests an Assemble of row bands in an
Assemble of channel bands)."""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from hetc.ir import Graph, Node, Value, dtype_from_numpy
from hetc.ir.fused import base_node
from hetc.ir.graph import TileRef
from hetc.ir.tiles import ASSEMBLE, REGION, TILE_DOMAIN
from hetc.target.tiling.cascade import (CASCADE_AXIS, CascadePlan, hand_cascade, joined_shape, layer_bands,
                                        plan_cascades)
from hetc.target.tiling.estimate import TILE_BUDGET_FRACTION, TilePlan
from hetc.target.tiling.plan import plan_node
from hetc.target.tiling.shapes import ACC, describe_tile, split_bands
from hetc.target.tiling.boxes import Box, box_shape, full
from hetc.target.tiling.axes import Untileable
from hetc.target.tiling.rules import RULES


def tile_graph(graph: Graph, target: Any, fraction: float = TILE_BUDGET_FRACTION) -> Graph:
    """A new graph in which each node too big for an accelerator that could otherwise run it (and, on targets
    with several identical cores, each node whose split the cost model finds faster) is cut into tiles that
    fit (each tile's working set at most ``fraction`` of the scratchpad); ``graph`` is untouched. Nodes that
    cannot be tiled stay whole; capability says why."""
    result = graph.copy()
    opset = result.opset.get("", result.opset.get("ai.onnx", 17))
    names = _Names(result)
    next_id = result.next_node_id()
    nodes: list[Node] = []
    staged: dict[str, Value] = {}
    changed = False
    # a cascade is written where its last layer was: every input of its layers is made by then
    cascades = {id(c.layers[-1].node): c for c in plan_cascades(result, target, opset, fraction)}
    cascaded = {id(layer.node) for c in cascades.values() for layer in c.layers}
    for node in result.nodes:
        if id(node) in cascades:
            made, next_id = _materialize_cascade(cascades[id(node)], names, next_id, staged)
            nodes += made
            changed = True
            continue
        if id(node) in cascaded:
            continue
        plan = plan_node(target, node, opset, fraction)
        if not isinstance(plan, TilePlan):
            nodes.append(node)
            continue
        made, next_id = _materialize(node, plan, opset, names, next_id, staged)
        nodes += made
        changed = True
    if not changed:
        return result
    return Graph.build(result.name, nodes, result.inputs, result.outputs, result.opset, result.metadata)


class _Names:
    """Fresh value and node names that collide with nothing in the graph."""

    def __init__(self, graph: Graph) -> None:
        self.used = set(graph.values) | {n.name for n in graph.nodes}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _staged(v: Value, staged: dict[str, Value], made: list[Node], names: _Names, next_id: int) -> tuple[Value, int]:
    """The value tiles take their Regions of: ``v`` itself when it lives off the cores already (a graph input,
    an Assemble's output), else a one-part Assemble of it, i.e. ``v`` written once to DRAM or the shared L2
    (hetc.schedule.problem.assembly_memories). A Region lives where its base is born (hetc.schedule.tasks);
    read in place from the scratchpad of the core that made it, the whole base would stay there beside every
    tile's double-buffered working set, which the tile budget leaves no room for (it overflowed 2 MiB cores on
    VGG-19 and DenseNet-121). Not called for a plan that reads in place (``TilePlan.staged`` false: a node
    whose whole working set fits the budget)."""
    producer = v.producer
    if producer is None or producer.domain == TILE_DOMAIN:
        return v, next_id
    if v.name not in staged:
        out = Value(names.fresh(f"{v.name}__dram"), v.dtype, v.shape)
        made.append(Node(next_id, ASSEMBLE, names.fresh(f"{v.name}/to_dram"), [v], [out], {"axis": 0},
                         TILE_DOMAIN))
        next_id += 1
        staged[v.name] = out
    return staged[v.name], next_id


class _Operands:
    """The values tiles read, made as they are first asked for: a constant sliced to its box (one new constant
    per distinct box), an activation's box as a ``Region`` (one per distinct box, shared by the tiles of a
    node that read it; of its DRAM copy when ``in_dram``), a whole input as itself. Every node made goes to
    ``made``."""

    def __init__(self, names: _Names, next_id: int, staged: dict[str, Value], in_dram: bool) -> None:
        self.names, self.next_id, self.staged, self.in_dram = names, next_id, staged, in_dram
        self.made: list[Node] = []
        self.regions: dict[tuple[str, str, Box], Value] = {}
        self.slices: dict[tuple[str, str, Box], Value] = {}
        self.counts: dict[tuple[str, str], int] = {}   # (kind, label) -> how many made: the names' suffixes

    def add(self, node: Node) -> None:
        self.made.append(node)
        self.next_id += 1

    def _count(self, kind: str, label: str) -> int:
        count = self.counts.get((kind, label), 0)
        self.counts[(kind, label)] = count + 1
        return count

    def of(self, node: Node, label: str, source: Any, box: Box, replace: dict[int, Any], index: int) -> Value:
        """The value tile ``index`` of ``node`` (named ``label``) reads for input ``source`` at ``box``."""
        names = self.names
        if source in replace:
            array = np.asarray(replace[source])
            v = node.inputs[source] if source < len(node.inputs) else None   # (a tile may add an input)
            y = node.outputs[0]
            name, dtype = (v.name, v.dtype) if v is not None else (f"{y.name}_in{source}",
                                                                   dtype_from_numpy(array.dtype))
            return Value(names.fresh(f"{name}__{label}_t{index}"), dtype, tuple(array.shape), const=array)
        v = node.inputs[source]
        assert v is not None
        if box == full(v):
            return v
        key = (label, v.name, box)
        if v.is_const:
            if key not in self.slices:
                count = self._count("s", label)
                array = np.ascontiguousarray(np.asarray(v.const)[tuple(slice(s, e) for s, e in zip(*box))])
                self.slices[key] = Value(names.fresh(f"{v.name}__{label}_s{count}"), v.dtype, box_shape(box),
                                         const=array)
            return self.slices[key]
        if key not in self.regions:
            count = self._count("r", label)
            base = v
            if self.in_dram:
                base, self.next_id = _staged(v, self.staged, self.made, names, self.next_id)
            out = Value(names.fresh(f"{v.name}__{label}_r{count}"), v.dtype, box_shape(box))
            self.add(Node(self.next_id, REGION, names.fresh(f"{label}/region{count}"), [base], [out],
                          {"starts": list(box[0]), "ends": list(box[1])}, TILE_DOMAIN))
            self.regions[key] = out
        return self.regions[key]


def _materialize(node: Node, plan: TilePlan, opset: int, names: _Names,
                 next_id: int, staged: dict[str, Value]) -> tuple[list[Node], int]:
    y = node.outputs[0]
    label = node.name or f"{node.op_type}_{node.id}"
    axes = [a for a, _n in plan.cuts]
    out_cuts = [(a, split_bands(a.extent, n, a.unit)) for a, n in plan.cuts if a.out_axis is not None]
    k_cut = next(((a, split_bands(a.extent, n, a.unit)) for a, n in plan.cuts if a.out_axis is None), None)
    k_bands = k_cut[1] if k_cut is not None else [None]
    operands = _Operands(names, next_id, staged, plan.staged)
    count = plan.count
    index = 0
    parts: dict[tuple[int, ...], Value] = {}   # output block (band index per cut output axis) -> its value

    for block in _blocks_in_loop_order(node, axes, out_cuts, opset):
        bands = {a.name: bands_[i] for (a, bands_), i in zip(out_cuts, block)}
        acc: Value | None = None
        for k, kband in enumerate(k_bands):
            full_bands = dict(bands)
            if kband is not None:
                full_bands["K"] = kband
            shape = describe_tile(node, axes, full_bands, (k, len(k_bands)), opset)
            ins: list[Value | None] = []
            for entry in shape.inputs:
                if entry is None:
                    ins.append(None)
                elif entry[0] == ACC:
                    ins.append(acc)
                else:
                    ins.append(operands.of(node, label, entry[0], entry[1], shape.replace, index))
            whole = not out_cuts and k == len(k_bands) - 1   # a K-only cut: the last tile makes the output
            out = y if whole else Value(names.fresh(f"{y.name}__{label}_t{index}"), y.dtype, box_shape(shape.out))
            operands.add(Node(operands.next_id, shape.op_type, names.fresh(f"{label}/tile{index}"), ins, [out],
                              shape.attrs, shape.domain,
                              TileRef(label, index, count, plan.axis_label, plan.why), node.when))
            index += 1
            acc = out
        assert acc is not None
        parts[block] = acc
    made = operands.made
    next_id = _assemble(node, out_cuts, parts, made, names, label, operands.next_id)
    return made, next_id


def _materialize_cascade(cascade: CascadePlan, names: _Names, next_id: int,
                         staged: dict[str, Value]) -> tuple[list[Node], int]:
    """The tiles of a cascade (hetc.target.tiling.cascade), band by band: in each band one tile per layer,
    each but the first reading what the band holds of the layer before, where it was made: that tile's
    output, or, with carried halo rows, a Concat of the rows kept from the previous band (a Region of what
    that band held) and the new ones. The last layer's tiles are assembled into its output (same name)."""
    operands = _Operands(names, next_id, staged, True)
    layers = cascade.layers
    labels = [layer.node.name or f"{layer.node.op_type}_{layer.node.id}" for layer in layers]
    held: list[tuple[Value, tuple[int, int]] | None] = [None] * len(layers)   # per layer: its band's value, rows
    parts: list[Value] = []
    for j, row in enumerate(layer_bands(layers, cascade.bands, cascade.carry)):
        for i, (layer, label, band) in enumerate(zip(layers, labels, row)):
            if band is None:
                continue
            node, y = layer.node, layer.node.outputs[0]
            ref = TileRef(label, j, cascade.bands, CASCADE_AXIS, cascade.why)
            pieces: list[Value] = []
            if band.keep is not None:   # a view of the rows the previous band made
                before = held[i]
                assert before is not None
                value, (lo, _hi) = before
                starts = [0, 0, band.keep[0] - lo, 0]
                ends = [*value.shape[:2], band.keep[1] - lo, value.shape[3]]
                kept = Value(names.fresh(f"{y.name}__{label}_k{j}"), y.dtype, joined_shape(layer, band.keep))
                operands.add(Node(operands.next_id, REGION, names.fresh(f"{label}/keep{j}"), [value], [kept],
                                  {"starts": starts, "ends": ends}, TILE_DOMAIN))
                pieces.append(kept)
            if band.tile is not None:
                shape = band.tile
                ins: list[Value | None] = []
                for entry in shape.inputs:
                    if entry is None:
                        ins.append(None)
                    elif entry[0] == 0 and i > 0:
                        previous = held[i - 1]
                        assert previous is not None and previous[0].shape == box_shape(entry[1])
                        ins.append(previous[0])
                    else:
                        ins.append(operands.of(node, label, entry[0], entry[1], shape.replace, j))
                out = Value(names.fresh(f"{y.name}__{label}_t{j}"), y.dtype, box_shape(shape.out))
                operands.add(Node(operands.next_id, shape.op_type, names.fresh(f"{label}/tile{j}"), ins, [out],
                                  shape.attrs, shape.domain, ref))
                pieces.append(out)
            value = pieces[0]
            if len(pieces) > 1:
                value = Value(names.fresh(f"{y.name}__{label}_b{j}"), y.dtype, joined_shape(layer, band.rows))
                operands.add(Node(operands.next_id, "Concat", names.fresh(f"{label}/join{j}"), pieces, [value],
                                  {"axis": 2}, "", ref))
            held[i] = (value, band.rows)
        last = held[-1]
        assert last is not None
        parts.append(last[0])
    made = operands.made
    made.append(Node(operands.next_id, ASSEMBLE, names.fresh(f"{labels[-1]}/assemble"), parts,
                     [layers[-1].node.outputs[0]], {"axis": 2}, TILE_DOMAIN))
    return made, operands.next_id + 1


def _blocks_in_loop_order(node: Node, axes: list, out_cuts: list, opset: int) -> list[tuple[int, ...]]:
    """The output blocks (band index per cut output axis) in the order their tiles are emitted, which is the
    order list scheduling breaks its ties in: axes that slice only activations outermost, axes that slice a
    weight innermost. The tiles that read one activation box (a row band) then run back to back, so the box
    is fetched while it is needed and not held (or fetched again) across the other bands; the weight slices
    they cycle through are constants, which the schedule may prefetch at any time and fan out through the
    L2. And the first row band of the output is whole after the first inner loop, not the last (VGG-19 on
    multi-npu: 18% less DMA from DRAM into the cores, 28% fewer spills)."""
    counts = [len(bands) for _a, bands in out_cuts]
    weights = {i for i, v in enumerate(node.inputs) if v is not None and v.is_const}

    def weight_boxes(block: dict[int, int]) -> list:
        bands = {a.name: b[block.get(j, 0)] for j, (a, b) in enumerate(out_cuts)}
        return [box for source, box in filter(None, describe_tile(node, axes, bands, (0, 1), opset).inputs)
                if source in weights]

    def slices_weights(i: int) -> bool:
        return counts[i] > 1 and weight_boxes({}) != weight_boxes({i: 1})

    order = sorted(range(len(out_cuts)), key=slices_weights)   # stable: the rule's order otherwise
    blocks = []
    for nested in itertools.product(*[range(counts[i]) for i in order]):
        block = [0] * len(out_cuts)
        for i, b in zip(order, nested):
            block[i] = b
        blocks.append(tuple(block))
    return blocks


def _assemble(node: Node, out_cuts: list, parts: dict[tuple[int, ...], Value], made: list[Node], names: _Names,
              label: str, next_id: int) -> int:
    """Join the output blocks: along the last cut axis first (an Assemble per band of the outer axis), then
    the outer axis into the original output."""
    if not out_cuts:
        return next_id
    y = node.outputs[0]
    level = dict(parts)
    for depth in range(len(out_cuts) - 1, -1, -1):
        axis = out_cuts[depth][0].out_axis
        grouped: dict[tuple[int, ...], list[Value]] = {}
        for block in sorted(level):
            grouped.setdefault(block[:depth], []).append(level[block])
        level = {}
        for prefix, members in grouped.items():
            if len(members) == 1:
                level[prefix] = members[0]
                continue
            shape = list(members[0].shape)
            shape[axis] = sum(v.shape[axis] for v in members)
            out = y if depth == 0 else Value(names.fresh(f"{y.name}__{label}_a{len(made)}"), y.dtype, tuple(shape))
            made.append(Node(next_id, ASSEMBLE, names.fresh(f"{label}/assemble"), list(members), [out],
                             {"axis": axis}, TILE_DOMAIN))
            next_id += 1
            level[prefix] = out
    return next_id


def tiling_note(graph: Graph) -> str:
    """One line for the build's progress: how many nodes were cut into how many tiles."""
    per_node: dict[str, int] = {}
    for node in graph.nodes:
        if node.tile is not None:
            per_node[node.tile.of] = node.tile.count
    if not per_node:
        return "no node needed tiling"
    return (f"{len(per_node)} nodes cut into {sum(per_node.values())} tiles "
            f"(at most {max(per_node.values())} per node)")


def tiling_rows(graph: Graph) -> list[dict[str, Any]]:
    """One row per tiled node, in graph order: its name, op, tile count, the axes cut and the tiler's
    rationale (report.txt and ``hetc inspect`` show them)."""
    from hetc.ir.fused import node_label
    rows: dict[str, dict[str, Any]] = {}
    for node in graph.nodes:
        ref = node.tile
        if ref is not None and ref.of not in rows:
            # a K chain's tiles carry the partial-sum Add: name the chain by its base op
            op = node.op_type if "K" in ref.axis.split(" x ") else node_label(node)
            rows[ref.of] = {"node": ref.of, "op": op, "tiles": ref.count, "axis": ref.axis, "why": ref.why}
    return list(rows.values())


def cut_node(graph: Graph, name: str, cuts: Sequence[tuple[str, int]], why: str = "cut by hand") -> Graph:
    """``graph`` with node ``name`` cut as given, e.g. ``[("rows", 4), ("channels", 2)]``, whatever its size
    (tests and experiments; ``tile_graph`` chooses cuts itself). Raises Untileable for an axis the node's
    rule does not offer."""
    result = graph.copy()
    opset = result.opset.get("", result.opset.get("ai.onnx", 17))
    node = next(n for n in result.nodes if n.name == name)
    base = base_node(node)
    axes = {a.name: a for a in RULES[base.op_type].axes(base, opset)}
    missing = [a for a, _n in cuts if a not in axes]
    if missing:
        raise Untileable(f"{node.op_type} '{name}' has no axis {missing[0]}; it has {', '.join(axes)}")
    plan = TilePlan(tuple((axes[a], n) for a, n in cuts), "", 0, 0.0, None, why)
    made, _ = _materialize(node, plan, opset, _Names(result), result.next_node_id(), {})
    nodes = [m for n in result.nodes for m in (made if n is node else [n])]
    return Graph.build(result.name, nodes, result.inputs, result.outputs, result.opset, result.metadata)


def cut_cascade(graph: Graph, names: Sequence[str], bands: int, why: str = "cascaded by hand",
                carry: bool = False) -> Graph:
    """``graph`` with the chain of nodes ``names`` (producer first, each feeding the next's data input) run as
    a cascade of ``bands`` row bands, whatever their sizes (tests and experiments; ``tile_graph`` chooses
    cascades itself)."""
    result = graph.copy()
    opset = result.opset.get("", result.opset.get("ai.onnx", 17))
    by_name = {n.name: n for n in result.nodes}
    chain = [by_name[name] for name in names]
    cascade = hand_cascade(chain, bands, opset, why, carry)
    made, _ = _materialize_cascade(cascade, _Names(result), result.next_node_id(), {})
    members = {id(n) for n in chain}
    nodes = [m for n in result.nodes if id(n) not in members or n is chain[-1]
             for m in (made if n is chain[-1] else [n])]
    return Graph.build(result.name, nodes, result.inputs, result.outputs, result.opset, result.metadata)
