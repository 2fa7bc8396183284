"""Cascading: a chain of tiled layers run band by band, so that the tensors between them stay on chip.

Tiled one by one, each layer of a chain writes its whole output to where activations join (DRAM, or the L2
of a target that has one) and the next layer's tiles read it back. A *cascade* cuts the last layer of the
chain into row bands and, for each band, runs every layer of the chain on the rows the next one needs: band
j of the last layer reads rows of the layer before it, which a tile of that layer makes for band j alone,
and so on back to the first layer, whose tiles read their input from where it joins. Only the first
layer's input and the last layer's output cross the join memory; the tensors in between are tile outputs
that the next tile reads where they were made.

A window that needs a halo makes consecutive bands of an earlier layer overlap. The shared rows are either
*recomputed* (each band's tile makes every row the next layer reads, as in fused-layer tiling) or *carried*
(each band's tile makes only the rows no earlier band made, and a Concat puts them after the rows kept from
the layer's previous band, a Region of what that band held: the band buffer the memory planner sizes and
places like any other). Carrying computes every row once but chains each layer's bands one after the other
and pays a Concat per band; recomputing keeps the bands independent, so they spread over the cores. The
cost model chooses, per cascade:

* **Links.** A node joins the chain of its producer when both are cut (``plan_node``: tiled to fit, or
  split across cores; reading their inputs from where they join; judged on the same accelerator), the
  producer's one output feeds only this node's data input, and both can be cut into output rows whose every
  other axis is whole.
* **Bands.** The fewest bands of the last layer for which every layer's tile (its input rows, weights and
  output rows) fits the tile budget, and that count rounded up to a multiple of the cores.
* **Estimate.** Per band, the layers' compute (``Target.cost`` of each tile's own shapes, so recomputed rows
  count; so does a carried band's Concat) against the band's DMA: the first layer's input rows, the last
  layer's output rows, any other activation a layer reads (a residual), and the weights once per core if the
  chain's weights fit the budget together, else once per band. Bands pipeline on each core and spread over the cores as in
  ``estimate.cut_estimate`` (carried bands on one core); DRAM's bandwidth bounds what crosses it.
* **Choice.** A chain is split into segments of up to ``MAX_STAGES`` layers by dynamic programming; a
  segment is cascaded when its estimate is at least ``NEAR_BEST`` below its layers tiled one by one, carried
  only when that is ``NEAR_BEST`` faster than recomputed (estimates that close count as equal, and the fewer
  tasks win, as between the cuts of one node).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from hetc.ir import Graph, Node, Value, itemsize
from hetc.ir.fused import base_node
from hetc.target.capability import kernel_support, working_set_bytes
from hetc.target.tiling.axes import Axis, Untileable
from hetc.target.tiling.boxes import Box, box_shape, full
from hetc.target.tiling.estimate import NEAR_BEST, CutContext, TilePlan, dma_ns, joined_in, tile_bytes
from hetc.target.tiling.plan import MAX_TILES, cut_context, eligible_accelerators, plan_node
from hetc.target.tiling.rules import RULES
from hetc.target.tiling.shapes import TileShape, describe_tile, sketch, source_value, split_bands

MAX_STAGES = 4   # layers per cascade: the halo, and the recomputed rows, grow with every layer added
ROWS = "rows"
CASCADE_AXIS = "rows, cascaded"   # the axis its tiles name (TileRef.axis)


@dataclass(frozen=True)
class Layer:
    """A node as a cascade's layer: its own tiling plan (None for a cut by hand), the context its tiles are
    judged in, its rows axis."""

    node: Node
    plan: TilePlan | None
    ctx: CutContext
    rows: Axis

    @property
    def estimate_ns(self) -> float:
        return self.plan.estimate_ns if self.plan is not None else 0.0


def hand_cascade(nodes: Sequence[Node], bands: int, opset: int, why: str = "cut by hand",
                 carry: bool = False) -> CascadePlan:
    """A cascade of ``nodes`` (producer first) in ``bands`` row bands, whatever their sizes (tests and
    experiments; ``tile_graph`` chooses cascades itself). Raises Untileable for a node without rows."""
    layers = []
    for node in nodes:
        base = base_node(node)
        axes = RULES[base.op_type].axes(base, opset)
        rows = next((a for a in axes if a.name == ROWS and a.out_axis == 2), None)
        if rows is None:
            raise Untileable(f"{node.op_type} '{node.name}' has no rows to cascade")
        layers.append(Layer(node, None, CutContext(node, None, axes, opset, "", 1, 0, 1), rows))
    if not 1 <= bands <= layers[-1].rows.extent:
        raise Untileable(f"{bands} bands of {layers[-1].rows.extent} rows")
    return CascadePlan(tuple(layers), bands, "", 0.0, 0.0, why, carry)


@dataclass(frozen=True)
class CascadePlan:
    """``layers`` (producer first) run as ``bands`` row bands of the last one, on ``device``."""

    layers: tuple[Layer, ...]
    bands: int
    device: str
    estimate_ns: float
    separate_ns: float   # the same layers, each tiled on its own
    why: str
    carry: bool = False  # halo rows kept from the band before (else recomputed)

    def describe(self) -> str:
        return f"{self.bands} bands of rows through {len(self.layers)} layers, cascaded"


def plan_cascades(graph: Graph, target: Any, opset: int, fraction: float) -> list[CascadePlan]:
    """The cascades the cost model finds faster than tiling their layers one by one, in graph order."""
    found: list[CascadePlan] = []
    for chain in _chains(graph, target, opset, fraction):
        found += _segments(chain)
    return found


# ----------------------------------------------------------------------------------------------- chains
def _layer(target: Any, node: Node, opset: int, fraction: float) -> Layer | None:
    """The node as a cascade layer, or None: it must be cut (staged) and have output rows."""
    plan = plan_node(target, node, opset, fraction)
    if (not isinstance(plan, TilePlan) or not plan.staged or plan.estimate_ns <= 0
            or node.when is not None or len(node.outputs) != 1 or len(node.outputs[0].shape) != 4):
        return None
    base = base_node(node)
    try:
        axes = RULES[base.op_type].axes(base, opset)
    except (KeyError, Untileable):
        return None
    rows = next((a for a in axes if a.name == ROWS and a.out_axis == 2), None)
    eligible = eligible_accelerators(target, node)
    if rows is None or plan.device not in eligible:
        return None
    ctx = cut_context(target, node, axes, opset, fraction, eligible)
    return Layer(node, plan, ctx, rows) if ctx.device == plan.device else None


def _linked(producer: Layer, consumer: Layer, graph: Graph) -> bool:
    y = producer.node.outputs[0]
    users = {id(n): n for n in y.consumers}
    if (list(users) != [id(consumer.node)] or any(o is y for o in graph.outputs)
            or producer.ctx.device != consumer.ctx.device):
        return False
    uses = [i for i, v in enumerate(consumer.node.inputs) if v is not None and v.name == y.name]
    if uses != [0]:
        return False
    try:   # a band of the consumer's rows must read whole rows of the producer's output
        tile = _tile(consumer, (0, 1))
    except Untileable:
        return False
    box = next(e[1] for e in tile.inputs if e is not None and e[0] == 0)
    whole = full(y)
    return all(box[0][a] == whole[0][a] and box[1][a] == whole[1][a] for a in range(4) if a != 2)


def _chains(graph: Graph, target: Any, opset: int, fraction: float) -> list[list[Layer]]:
    """Maximal chains of linked layers, two or more long."""
    chains: list[list[Layer]] = []
    open_: dict[str, list[Layer]] = {}   # output name of a chain's last layer -> the chain
    for node in graph.nodes:
        layer = _layer(target, node, opset, fraction)
        if layer is None:
            continue
        x = node.inputs[0]
        chain = open_.pop(x.name, None) if x is not None else None
        if chain is not None and _linked(chain[-1], layer, graph):
            chain.append(layer)
        else:
            chain = [layer]
            chains.append(chain)
        open_[node.outputs[0].name] = chain
    return [c for c in chains if len(c) >= 2]


# ----------------------------------------------------------------------------------------------- bands
@dataclass(frozen=True)
class LayerBand:
    """One layer's share of one band: ``rows`` of its output that the band holds (what the next layer's tile
    reads), made of the rows ``keep`` kept from the layer's previous band (carried halo rows; None: none) and
    the rest, which ``tile`` makes (None: the band needs no new rows of this layer)."""

    rows: tuple[int, int]
    tile: TileShape | None
    keep: tuple[int, int] | None = None


def _tile(layer: Layer, rows: tuple[int, int]) -> TileShape:
    return describe_tile(layer.node, layer.ctx.axes, {ROWS: rows}, (0, 1), layer.ctx.opset)


def _reads(tile: TileShape) -> tuple[int, int]:
    """The rows of its data input a tile reads."""
    box: Box = next(e[1] for e in tile.inputs if e is not None and e[0] == 0)
    return box[0][2], box[1][2]


def _band(layers: Sequence[Layer], rows: tuple[int, int], made: list[int] | None) -> list[LayerBand | None]:
    """Per layer (first first), what the band of the last layer's output rows ``rows`` holds of it. ``made``:
    per layer, the rows earlier bands made (they are made in order; updated), whose rows this band reads
    again it keeps (carried); None: it recomputes them. None for a layer: the band needs nothing of it."""
    row: list[LayerBand | None] = [None] * len(layers)
    need: tuple[int, int] | None = rows
    for i in range(len(layers) - 1, -1, -1):
        if need is None:
            break
        lo, hi = need
        keep = (lo, min(hi, made[i])) if made is not None and lo < made[i] else None
        fresh = (keep[1], hi) if keep is not None else need
        tile = _tile(layers[i], fresh) if fresh[1] > fresh[0] else None
        row[i] = LayerBand(need, tile, keep)
        if made is not None:
            made[i] = max(made[i], hi)
        # (the first layer's input 0 may be anything: a broadcast constant of a Mul)
        need = _reads(tile) if tile is not None and i > 0 else None
    return row


def band_tiles(layers: Sequence[Layer], rows: tuple[int, int]) -> list[TileShape]:
    """Each layer's tile for output rows ``rows`` of the last layer, first layer first, halo rows recomputed:
    each tile makes exactly the rows of its output that the next tile's window reads."""
    return [band.tile for band in _band(layers, rows, None) if band is not None and band.tile is not None]


def layer_bands(layers: Sequence[Layer], n: int, carry: bool) -> list[list[LayerBand | None]]:
    """Per band (of ``n`` of the last layer's rows), per layer, what the band holds of it (``_band``). With
    ``carry``, a layer's band keeps the rows its previous band made that this one reads again (the halo) and
    makes only the rest; without, it recomputes them."""
    made = [0] * len(layers) if carry else None
    return [_band(layers, rows, made) for rows in split_bands(layers[-1].rows.extent, n)]


def joined_shape(layer: Layer, rows: tuple[int, int]) -> tuple[int, ...]:
    shape = list(layer.node.outputs[0].shape)
    shape[2] = rows[1] - rows[0]
    return tuple(shape)


def _join_sketch(layer: Layer, band: LayerBand) -> Node:
    """The Concat that puts a band's kept rows before its new ones, as a throw-away node for cost and size."""
    assert band.keep is not None and band.tile is not None
    y = layer.node.outputs[0]
    parts = [Value(f"{y.name}_kept", y.dtype, joined_shape(layer, band.keep)),
             Value(f"{y.name}_new", y.dtype, box_shape(band.tile.out))]
    return Node(layer.node.id, "Concat", layer.node.name, list(parts),
                [Value(y.name, y.dtype, joined_shape(layer, band.rows))], {"axis": 2})


def _probes(n: int) -> list[int]:
    """Bands whose tiles stand for all of an n-band cut: the edges (padding and clipping) and the largest
    inner bands (split_bands makes the first ones one row taller)."""
    return sorted({i for i in (0, 1, 2, n // 2, n - 3, n - 2, n - 1) if 0 <= i < n})


def _fits_recomputed(layers: Sequence[Layer], n: int) -> bool:
    """Whether the probe bands' recomputed tiles fit (the bisection's test; ``_best`` checks every band)."""
    bands = split_bands(layers[-1].rows.extent, n)
    try:
        return _fits(layers, [_band(layers, bands[j], None) for j in _probes(n)])
    except Untileable:
        return False


def _fits(layers: Sequence[Layer], bands: list[list[LayerBand | None]]) -> bool:
    for row in bands:
        for layer, band in zip(layers, row):
            if band is None or band.tile is None:
                continue
            if tile_bytes(layer.ctx, band.tile) > layer.ctx.budget:
                return False
            if band.keep is not None and working_set_bytes(_join_sketch(layer, band), layer.ctx.alignment) \
                    > layer.ctx.budget:
                return False
    return True


def _fewest_bands(layers: Sequence[Layer]) -> int | None:
    """The fewest bands whose recomputed tiles fit (carried tiles are no larger: they make fewer rows)."""
    extent = layers[-1].rows.extent
    hi = min(extent, MAX_TILES)
    if not _fits_recomputed(layers, hi):
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits_recomputed(layers, mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _estimate(layers: Sequence[Layer], bands: list[list[LayerBand | None]]) -> float | None:
    """Estimated ns of the cascade (module docstring), None where a tile has no kernel."""
    first, last = layers[0], layers[-1]
    target, device, dram = first.ctx.target, first.ctx.device, first.ctx.target.dram
    weight_bytes = sum({v.name: v.nbytes for s in layers for v in s.node.present_inputs if v.is_const}.values())
    resident = weight_bytes <= first.ctx.budget   # else every band fetches them again
    weight_ns = dma_ns(first.ctx, weight_bytes) if weight_bytes else 0.0
    out_from = joined_in(last.ctx, last.node.outputs[0])
    n = len(bands)
    # carried rows chain each layer's bands one after the other: one core runs them (moving a band's rows
    # to another core would cost more than its halo)
    carry = any(b is not None and b.keep is not None for row in bands for b in row)
    cores = 1 if carry else min(first.ctx.cores, n)
    total, first_dma, moved = 0.0, math.inf, 0
    for row in bands:
        compute, dma = 0.0, 0.0 if resident else weight_ns
        moved += 0 if resident else weight_bytes
        for i, (layer, band) in enumerate(zip(layers, row)):
            if band is None or band.tile is None:
                continue
            tile = band.tile
            s = sketch(layer.node, tile)
            if not kernel_support(target, s, device):
                return None
            compute += target.cost(s, device)
            if band.keep is not None:
                join = _join_sketch(layer, band)
                if not kernel_support(target, join, device):
                    return None
                compute += target.cost(join, device)
            reads = [(source_value(layer.node, tile, e[0]), value) for e, value in zip(tile.inputs, s.inputs)
                     if e is not None and value is not None and not (i > 0 and e[0] == 0)]
            for v, part in [(v, part) for v, part in reads if not v.is_const]:
                source = joined_in(layer.ctx, v)   # the first layer's input, a residual: from where they join
                dma += dma_ns(layer.ctx, part.nbytes, source=source)
                moved += part.nbytes if source == dram else 0
        out = row[-1]
        assert out is not None and out.tile is not None   # the last layer's rows, drained where they join
        nbytes = math.prod(box_shape(out.tile.out)) * itemsize(last.node.outputs[0].dtype)
        dma += dma_ns(last.ctx, nbytes, source=out_from)
        moved += nbytes if out_from == dram else 0
        total += max(compute, dma)
        first_dma = min(first_dma, dma)
    per_core = total * math.ceil(n / cores) / n + first_dma + (weight_ns if resident else 0.0)
    moved += weight_bytes * cores if resident else 0
    sync = target.sync_ns if cores > 1 else 0.0
    return max(per_core + sync, moved / target.memories[dram].bandwidth)


def _best(layers: Sequence[Layer]) -> CascadePlan | None:
    """The faster of the cascades of ``layers`` (halo rows recomputed or carried), when it is estimated
    ``NEAR_BEST`` faster than tiling them one by one."""
    n = _fewest_bands(layers)
    if n is None or n < 2:   # (one band: the layers would fit whole, and were not tiled)
        return None
    cores = layers[0].ctx.cores
    scored = []
    for count in sorted({n, min(-(-n // cores) * cores, layers[-1].rows.extent, MAX_TILES)}):
        for carry in (False, True):
            try:
                bands = layer_bands(layers, count, carry)
            except Untileable:
                continue
            if _fits(layers, bands) and (estimate := _estimate(layers, bands)) is not None:
                scored.append((estimate, count, carry))
    if not scored:
        return None
    # as in estimate.pick_cut: within NEAR_BEST of the fastest counts as as fast, and fewer tasks win (a
    # carried band adds a Concat per layer; fewer bands are fewer tiles)
    fastest = min(e for e, _n, _c in scored)
    estimate, count, carry = min((s for s in scored if s[0] <= fastest * (1 + NEAR_BEST)),
                                 key=lambda s: (s[2], s[1], s[0]))
    separate = sum(s.estimate_ns for s in layers)
    if estimate > separate * (1 - NEAR_BEST):
        return None
    names = " -> ".join(s.node.name or s.node.op_type for s in layers)
    why = (f"cascade {names}: {count} bands of rows through {len(layers)} layers, the tensors between them on "
           f"chip, halo rows {'carried' if carry else 'recomputed'}; {estimate / 1000:,.1f} µs estimated on "
           f"{layers[0].ctx.device} against {separate / 1000:,.1f} µs tiled one by one")
    return CascadePlan(tuple(layers), count, layers[0].ctx.device, estimate, separate, why, carry)


def _segments(chain: list[Layer]) -> list[CascadePlan]:
    """The chain cut into segments (a layer alone, or a cascade of up to MAX_STAGES) of least estimate."""
    size = len(chain)
    best: list[tuple[float, list[CascadePlan]]] = [(0.0, [])]
    for end in range(1, size + 1):
        alone = chain[end - 1].estimate_ns
        options = [(best[end - 1][0] + alone, best[end - 1][1])]
        for start in range(max(0, end - MAX_STAGES), end - 1):
            cascade = _best(chain[start:end])
            if cascade is not None:
                options.append((best[start][0] + cascade.estimate_ns, [*best[start][1], cascade]))
        best.append(min(options, key=lambda o: o[0]))
    return best[size][1]
