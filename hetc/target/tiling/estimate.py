"""Judging a cut: whether every tile fits its budget, and how long its tiles take (plan.py's docstring states
the model), for the single driver in ``plan`` and the multi-device cuts in ``parts``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from hetc.ir import Node, itemsize
from hetc.target.capability import kernel_support
from hetc.target.tiling.boxes import box_shape
from hetc.target.tiling.axes import Axis, Untileable
from hetc.target.tiling.shapes import ACC, TileShape, describe_tile, sketch, source_value, split_bands

TILE_BUDGET_FRACTION = 1 / 3
# The budget tried as well when memory planning lengthened a schedule by much (hetc.planning): half a
# scratchpad, one tile loading while one computes, so fewer tiles and copies for the planner to fit.
WIDE_TILE_BUDGET_FRACTION = 1 / 2
NEAR_BEST = 0.05   # cuts estimated within 5% of the fastest count as equally fast (fewest tiles wins)


@dataclass(frozen=True)
class TilePlan:
    """The cut chosen for a node: (axis, count) per cut axis, the device it was costed on and the rationale."""

    cuts: tuple[tuple[Axis, int], ...]
    device: str
    budget: int
    estimate_ns: float
    whole_ns: float | None       # the node whole on one core, when it fits (a split), else None
    why: str
    # The tiles take their activation boxes from a copy in DRAM (``graph._staged``); False: in place, from
    # wherever the producer left the activation, for a node whose whole working set fits the tile budget.
    staged: bool = True

    @property
    def count(self) -> int:
        return math.prod(n for _axis, n in self.cuts)

    @property
    def axis_label(self) -> str:
        return " x ".join(axis.name for axis, _n in self.cuts)

    def describe(self) -> str:
        return cut_label(self.cuts)


@dataclass
class CutContext:
    node: Node
    target: Any
    axes: list[Axis]
    opset: int
    device: str
    cores: int
    budget: int
    alignment: int
    fraction: float = TILE_BUDGET_FRACTION
    # The node fits whole, so its weights can load ahead of it, behind earlier work, as a whole node's do: its
    # tiles wait for no weight slice, though the core's DMA engine still carries them (``split_across_cores``).
    weights_ahead: bool = False
    # Per input of the node, whether it reaches the node joined off the cores (plan._joined_inputs).
    joined_inputs: tuple[bool, ...] = ()


def _classes(bands: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Representative band indices with their multiplicity: bands of one size at the same kind of position
    (first, last, inner) make identical tiles."""
    seen: dict[tuple, list[int]] = {}
    for i, (lo, hi) in enumerate(bands):
        seen.setdefault((hi - lo, i == 0, i == len(bands) - 1), []).append(i)
    return [(idx[0], len(idx)) for idx in seen.values()]


def representatives(ctx: CutContext, cuts: Sequence[tuple[Axis, int]]) -> list[tuple[TileShape, int]]:
    """(tile, how many tiles are like it) for a cut."""
    out_cuts = [(a, n) for a, n in cuts if a.out_axis is not None]
    k_cut = next(((a, n) for a, n in cuts if a.out_axis is None), None)
    per_axis = []
    for axis, n in out_cuts:
        bands = split_bands(axis.extent, n, axis.unit)
        per_axis.append([(axis.name, bands[i], mult) for i, mult in _classes(bands)])
    k_classes = [(None, 1, 1)]
    if k_cut is not None:
        kb = split_bands(k_cut[0].extent, k_cut[1], k_cut[0].unit)
        k_classes = [(kb[i], i, mult) for i, mult in _classes(kb)]
    reps: list[tuple[TileShape, int]] = []
    combos: list[tuple[dict, int]] = [({}, 1)]
    for options in per_axis:
        combos = [({**b, name: band}, m * mult) for b, m in combos for name, band, mult in options]
    for bands, mult in combos:
        for kband, kindex, kmult in k_classes:
            full_bands = dict(bands)
            if kband is not None:
                full_bands["K"] = kband
            k = (kindex, k_cut[1]) if k_cut is not None else (0, 1)
            reps.append((describe_tile(ctx.node, ctx.axes, full_bands, k, ctx.opset), mult * kmult))
    return reps


def fits(ctx: CutContext, cuts: Sequence[tuple[Axis, int]]) -> bool:
    try:
        reps = representatives(ctx, cuts)
    except Untileable:
        return False
    return all(tile_bytes(ctx, t) <= ctx.budget for t, _m in reps)


def tile_bytes(ctx: CutContext, tile: TileShape) -> int:
    """``working_set_bytes`` of the tile, from its boxes (no node is built: this runs for every cut tried)."""
    y = ctx.node.outputs[0]
    distinct: dict[tuple, int] = {}
    for entry in tile.inputs:
        if entry is None:
            continue
        source, box = entry
        v = source_value(ctx.node, tile, source)
        distinct[(source if source == ACC else v.name, box)] = math.prod(box_shape(box)) * itemsize(v.dtype)
    distinct[("out", tile.out)] = math.prod(box_shape(tile.out)) * itemsize(y.dtype)
    a = ctx.alignment
    return sum(-(-b // a) * a for b in distinct.values())


def dma_ns(ctx: CutContext, nbytes: int, device: str | None = None, source: str | None = None) -> float:
    """DMA time of ``nbytes`` from ``source`` (by default DRAM) to the home of ``device`` (by default the one
    the cut is costed on), or back."""
    target = ctx.target
    home = target.devices[device or ctx.device].memory
    total = 0.0
    for src, dst in target.route(source or target.dram, home):
        engine = target.engines_between(src, dst)[0]
        total += target.transfer_ns(nbytes, engine.name)
    return total


def dma_by_source(ctx: CutContext, moves: Sequence[tuple[int, str]], device: str | None = None) -> float:
    """DMA time of ``moves`` ((bytes, source memory) pairs) into the home of ``device``: one transfer per
    source memory, as a part's slices from one memory go as one chain of descriptors."""
    grouped: dict[str, int] = {}
    for nbytes, source in moves:
        grouped[source] = grouped.get(source, 0) + nbytes
    return sum(dma_ns(ctx, nbytes, device, source) for source, nbytes in sorted(grouped.items()))


def joined_in(ctx: CutContext, value: Any) -> str:
    """The memory a tile's slice of ``value`` (an input or the output of the node cut) moves from or to: DRAM
    for a weight, else where the whole activation is joined (``Target.join_memory``: the L2 of a target that
    stages through one, for values that fit it)."""
    return ctx.target.dram if value.is_const else ctx.target.join_memory(value.nbytes)


def cut_estimate(ctx: CutContext, cuts: Sequence[tuple[Axis, int]]) -> float | None:
    """Estimated ns of the tiles of a cut (module docstring), None when a tile has no kernel on the device.
    With ``weights_ahead`` the weight slices leave the tiles' pipeline: a core's DMA engine still carries
    them, so the core takes at least its transfers' total."""
    target, node = ctx.target, ctx.node
    total_pipe, total_dma, first, n, moved = 0.0, 0.0, math.inf, 0, 0
    out_from = joined_in(ctx, node.outputs[0])
    for tile, mult in representatives(ctx, cuts):
        s = sketch(node, tile)
        if not kernel_support(target, s, ctx.device):
            return None
        compute = target.cost(s, ctx.device)
        dma, ahead, nbytes = 0.0, 0.0, 0
        for entry, value in zip(tile.inputs, s.inputs):
            if entry is not None and entry[0] != ACC and value is not None:
                operand = source_value(node, tile, entry[0])
                source = joined_in(ctx, operand)
                nbytes += value.nbytes if source == target.dram else 0
                if ctx.weights_ahead and operand.is_const:
                    ahead += dma_ns(ctx, value.nbytes, source=source)
                else:
                    dma += dma_ns(ctx, value.nbytes, source=source)
        if not tile.partial:
            nbytes += s.outputs[0].nbytes if out_from == target.dram else 0
            dma += dma_ns(ctx, s.outputs[0].nbytes, source=out_from)
        total_pipe += mult * max(compute, dma)
        total_dma += mult * (dma + ahead)
        first = min(first, dma)
        n += mult
        moved += mult * nbytes
    cores = parallel_cores(ctx, cuts)   # the K tiles of one output block run one after the other
    per_core_tiles = math.ceil(n / cores)
    per_core = max(total_pipe * per_core_tiles / n + first, total_dma * per_core_tiles / n)
    sync = target.sync_ns if cores > 1 else 0.0
    return max(per_core + sync, moved / target.memories[target.dram].bandwidth)


def parallel_cores(ctx: CutContext, cuts: Sequence[tuple[Axis, int]]) -> int:
    """Cores a cut can keep busy: one per output block at most."""
    return min(ctx.cores, math.prod(n for a, n in cuts if a.out_axis is not None))


def whole_ns(ctx: CutContext) -> float:
    weights = sum(v.nbytes for v in {id(v): v for v in ctx.node.present_inputs if v.is_const}.values())
    return ctx.target.cost(ctx.node, ctx.device) + (dma_ns(ctx, weights) if weights else 0.0)


def pick_cut(scored: list[tuple[float, Any]]) -> tuple[float, Any]:
    """The fastest cut, except that a cut with fewer tiles within ``NEAR_BEST`` of it wins: an estimate is
    not that precise, and every tile costs the scheduler tasks."""
    best = min(e for e, _c in scored)
    near = [(e, c) for e, c in scored if e <= best * (1 + NEAR_BEST)]
    # then the outer axes: their tiles are fewer, longer contiguous runs for the DMA descriptors
    return min(near, key=lambda ec: (cut_count(ec[1]), ec[0],
                                     [99 if a.out_axis is None else a.out_axis for a, _n in ec[1]]))


def cut_count(cuts: Sequence[tuple[Axis, int]]) -> int:
    return math.prod(n for _a, n in cuts)


def cut_label(cuts: Sequence[tuple[Axis, int]]) -> str:
    return " x ".join(f"{n} bands of {a.name}" for a, n in cuts) + f" ({cut_count(cuts)} tiles)"
