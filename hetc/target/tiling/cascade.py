"""Cascading: a chain of tiled layers run band by band, so that the tensors between them stay on chip.

Tiled one by one, each layer of a chain writes its whole output to where activations join (DRAM, or the L2
of a target that has one) and the next layer's tiles read it back. A *cascade* cuts the last layer of the
chain into row bands and, for each band, runs every layer of the chain on the rows the next one needs: band
j of the last layer reads rows of the layer before it, which a tile of that layer makes for band j alone,
and so on back to the first layer, whose tiles read their input from where it joins. Only the first
layer's input and the last layer's output cross the join memory; the tensors in between are tile outputs
that the next tile reads where they were made.

The cut is *overlapped* (recompute, as in fused-layer tiling): where a window needs a halo, the bands of an
earlier layer overlap, and the rows they share are computed once per band. A rolling buffer would keep them
instead, but it needs a tile to read rows two earlier tiles made, which the execution model (one value per
tile output, hetc.ir.tiles) cannot say without a copy. So a cascade pays where its layers' windows add
little halo (a pooling window of its own stride, a 1x1 convolution, elementwise layers) or where the layers
are bound by the traffic the cascade removes, and the cost model decides which:

* **Links.** A node joins the chain of its producer when both are cut (``plan_node``: tiled to fit, or
  split across cores; reading their inputs from where they join; judged on the same accelerator), the
  producer's one output feeds only this node's data input, and both can be cut into output rows whose every
  other axis is whole.
* **Bands.** The fewest bands of the last layer for which every layer's tile (its input rows, weights and
  output rows) fits the tile budget, and that count rounded up to a multiple of the cores.
* **Estimate.** Per band, the layers' compute (``Target.cost`` of each tile's own shapes, so the recomputed
  rows count) against the band's DMA: the first layer's input rows, the last layer's output rows, any other
  activation a layer reads (a residual), and the weights once per core if the chain's weights fit the
  budget together, else once per band. Bands pipeline on each core and spread over the cores as in
  ``estimate.cut_estimate``; DRAM's bandwidth bounds what crosses it.
* **Choice.** A chain is split into segments of up to ``MAX_STAGES`` layers by dynamic programming; a
  segment is cascaded when its estimate is at least ``NEAR_BEST`` below its layers tiled one by one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from hetc.ir import Graph, Node
from hetc.ir.fused import base_node
from hetc.target.capability import kernel_support
from hetc.target.tiling.axes import Axis, Untileable
from hetc.target.tiling.boxes import Box, full
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


def hand_cascade(nodes: Sequence[Node], bands: int, opset: int, why: str = "cut by hand") -> CascadePlan:
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
    return CascadePlan(tuple(layers), bands, "", 0.0, 0.0, why)


@dataclass(frozen=True)
class CascadePlan:
    """``layers`` (producer first) run as ``bands`` row bands of the last one, on ``device``."""

    layers: tuple[Layer, ...]
    bands: int
    device: str
    estimate_ns: float
    separate_ns: float   # the same layers, each tiled on its own
    why: str

    def describe(self) -> str:
        return f"{self.bands} bands of rows through {len(self.layers)} layers, cascaded"


def plan_cascades(graph: Graph, target: Any, opset: int, fraction: float) -> list[CascadePlan]:
    """The cascades the cost model finds faster than tiling their layers one by one, in graph order."""
    found: list[CascadePlan] = []
    for chain in _chains(graph, target, opset, fraction):
        found += _segments(chain)
    return found


# ----------------------------------------------------------------------------------------------- chains
def _stage(target: Any, node: Node, opset: int, fraction: float) -> Layer | None:
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
        stage = _stage(target, node, opset, fraction)
        if stage is None:
            continue
        x = node.inputs[0]
        chain = open_.pop(x.name, None) if x is not None else None
        if chain is not None and _linked(chain[-1], stage, graph):
            chain.append(stage)
        else:
            chain = [stage]
            chains.append(chain)
        open_[node.outputs[0].name] = chain
    return [c for c in chains if len(c) >= 2]


# ----------------------------------------------------------------------------------------------- bands
def _tile(stage: Layer, rows: tuple[int, int]) -> TileShape:
    return describe_tile(stage.node, stage.ctx.axes, {ROWS: rows}, (0, 1), stage.ctx.opset)


def band_tiles(stages: Sequence[Layer], rows: tuple[int, int]) -> list[TileShape]:
    """Each layer's tile for output rows ``rows`` of the last layer, first layer first: each tile makes
    exactly the rows of its output that the next tile's window reads."""
    tiles: list[TileShape] = []
    for stage in reversed(stages):
        tile = _tile(stage, rows)
        tiles.append(tile)
        box: Box = next(e[1] for e in tile.inputs if e is not None and e[0] == 0)
        rows = (box[0][2], box[1][2])
    return tiles[::-1]


def _probes(n: int) -> list[int]:
    """Bands whose tiles stand for all of an n-band cut: the edges (padding and clipping) and the largest
    inner bands (split_bands makes the first ones one row taller)."""
    return sorted({i for i in (0, 1, 2, n // 2, n - 3, n - 2, n - 1) if 0 <= i < n})


def _fits(stages: Sequence[Layer], n: int, probes: Sequence[int] | None = None) -> bool:
    last = stages[-1]
    bands = split_bands(last.rows.extent, n)
    try:
        for j in (probes if probes is not None else _probes(n)):
            for stage, tile in zip(stages, band_tiles(stages, bands[j])):
                if tile_bytes(stage.ctx, tile) > stage.ctx.budget:
                    return False
    except Untileable:
        return False
    return True


def _fewest_bands(stages: Sequence[Layer]) -> int | None:
    extent = stages[-1].rows.extent
    hi = min(extent, MAX_TILES)
    if not _fits(stages, hi):
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits(stages, mid):
            hi = mid
        else:
            lo = mid + 1
    while lo <= min(extent, MAX_TILES) and not _fits(stages, lo, range(lo)):   # every band, once
        lo += 1
    return lo if lo <= min(extent, MAX_TILES) else None


def _estimate(stages: Sequence[Layer], n: int) -> float | None:
    """Estimated ns of the cascade in ``n`` bands (module docstring), None where a tile has no kernel."""
    first, last = stages[0], stages[-1]
    target, device, dram = first.ctx.target, first.ctx.device, first.ctx.target.dram
    weight_bytes = sum({v.name: v.nbytes for s in stages for v in s.node.present_inputs if v.is_const}.values())
    resident = weight_bytes <= first.ctx.budget   # else every band fetches them again
    weight_ns = dma_ns(first.ctx, weight_bytes) if weight_bytes else 0.0
    out_from = joined_in(last.ctx, last.node.outputs[0])
    cores = min(first.ctx.cores, n)
    total, first_dma, moved = 0.0, math.inf, 0
    for rows in split_bands(last.rows.extent, n):
        compute, dma = 0.0, 0.0 if resident else weight_ns
        moved += 0 if resident else weight_bytes
        for i, (stage, tile) in enumerate(zip(stages, band_tiles(stages, rows))):
            s = sketch(stage.node, tile)
            if not kernel_support(target, s, device):
                return None
            compute += target.cost(s, device)
            reads = [(source_value(stage.node, tile, e[0]), value) for e, value in zip(tile.inputs, s.inputs)
                     if e is not None and value is not None and not (i > 0 and e[0] == 0)]
            for v, part in [(v, part) for v, part in reads if not v.is_const]:
                source = joined_in(stage.ctx, v)   # the first layer's input, a residual: from where they join
                dma += dma_ns(stage.ctx, part.nbytes, source=source)
                moved += part.nbytes if source == dram else 0
        out = s.outputs[0]   # the last layer's rows, drained to where its output joins
        dma += dma_ns(last.ctx, out.nbytes, source=out_from)
        moved += out.nbytes if out_from == dram else 0
        total += max(compute, dma)
        first_dma = min(first_dma, dma)
    per_core = total * math.ceil(n / cores) / n + first_dma + (weight_ns if resident else 0.0)
    moved += weight_bytes * cores if resident else 0
    sync = target.sync_ns if cores > 1 else 0.0
    return max(per_core + sync, moved / target.memories[dram].bandwidth)


def _best(stages: Sequence[Layer]) -> CascadePlan | None:
    """The cascade of ``stages`` when it is estimated ``NEAR_BEST`` faster than tiling them one by one."""
    n = _fewest_bands(stages)
    if n is None or n < 2:   # (one band: the layers would fit whole, and were not tiled)
        return None
    cores = stages[0].ctx.cores
    counts = {n, min(-(-n // cores) * cores, stages[-1].rows.extent, MAX_TILES)}
    scored = [(e, k) for k in sorted(counts) if _fits(stages, k, range(k)) and (e := _estimate(stages, k)) is not None]
    if not scored:
        return None
    estimate, bands = min(scored)
    separate = sum(s.estimate_ns for s in stages)
    if estimate > separate * (1 - NEAR_BEST):
        return None
    names = " -> ".join(s.node.name or s.node.op_type for s in stages)
    why = (f"cascade {names}: {bands} bands of rows through {len(stages)} layers, the tensors between them on "
           f"chip; {estimate / 1000:,.1f} µs estimated on {stages[0].ctx.device} against "
           f"{separate / 1000:,.1f} µs tiled one by one")
    return CascadePlan(tuple(stages), bands, stages[0].ctx.device, estimate, separate, why)


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
