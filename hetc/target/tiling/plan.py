"""Choosing a tiling: which axes, how many tiles, judged by the cost model.

One driver for every op: the rule of the node's op (``RULES``) lists the axes it may be cut along; the driver
tries cuts along one axis or two, keeps those whose every tile fits the tile budget, estimates each with the
cost model and keeps the fastest.

* **Budget.** A tile's working set (``working_set_bytes``, aligned) is at most ``TILE_BUDGET_FRACTION`` of the
  smallest home memory among the accelerators that could run the node but for its size. A third: while tile k
  computes, tile k+1's operands arrive and tile k-1's output drains, three tiles' buffers at once. (Half, which
  counted the load and the drain as one tile, left the planner no room on 2 MiB cores: VGG-19's packing on
  multi-npu overflowed by 1 MB at instants where nothing could leave.)
* **Estimate.** Per tile, its compute time ``Target.cost`` (launch + roofline on the tile's own shapes, so the
  halo's extra rows count) and its DMA time (each input box and each weight slice fetched from DRAM per tile,
  so re-fetches count; the output drained to DRAM). A core runs its tiles as a two-stage pipeline, so it
  takes ``sum(max(compute, dma)) + the first load``; tiles spread over the identical cores that can run them,
  plus one semaphore when more than one core takes part; DRAM bandwidth bounds the whole.
* **Splitting.** On a target with several identical cores, a node that fits whole is also cut into at least
  as many parts as cores when that estimate beats running it whole on one core (its activations assumed on
  chip, its weights fetched once): the parts pay their own launches, activation transfers and the join's
  semaphore, against a fraction of the compute.
* **Cap.** At most ``MAX_TILES`` (512) tiles per node. Every tile is a compute task and two or three DMA tasks
  for the scheduler, so 512 tiles of one node are about two thousand tasks, several times a whole light model;
  the largest layer of the light models, VGG-19's fc6 (411 MB of fp32 weights streamed through 1 MiB tile
  budgets on multi-npu), needs about 400. A node that needs more is left whole and falls back, its reason
  saying so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hetc.ir import Node, Value, dtype_from_numpy, itemsize
from hetc.ir.fused import (EPILOGUE_ATTR, FUSED_DOMAIN, base_input_count, base_node, epilogue_of, is_composite,
                           is_fused)
from hetc.target.capability import kernel_support, working_set_bytes
from hetc.target.tiling.boxes import Box, box_shape, broadcast_box, full
from hetc.target.tiling.rules import RULES, Axis, Bands, Untileable, out_box

TILE_BUDGET_FRACTION = 1 / 3
MAX_TILES = 512
NEAR_BEST = 0.05   # cuts estimated within 5% of the fastest count as equally fast (fewest tiles wins)
ACC = "acc"   # a tile input that is the previous partial sum of its K chain
# Counts tried along the first axis of a two-axis cut (the second gets the fewest that fit).
_FIRST_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass(frozen=True)
class TileShape:
    """One tile as the driver builds it: op, domain, attributes (with its own epilogue), per input either
    (original input index, box), (ACC, box) or None, and its box of the original output."""

    op_type: str
    domain: str
    attrs: dict[str, Any]
    inputs: tuple[tuple[Any, Box] | None, ...]
    out: Box
    replace: dict[int, Any]
    partial: bool = False   # its output is a partial sum the next tile of its K chain adds to, on chip


@dataclass(frozen=True)
class TilePlan:
    """The cut chosen for a node: (axis, count) per cut axis, the device it was costed on and the rationale."""

    cuts: tuple[tuple[Axis, int], ...]
    device: str
    budget: int
    estimate_ns: float
    whole_ns: float | None       # the node whole on one core, when it fits (a split), else None
    why: str

    @property
    def count(self) -> int:
        return math.prod(n for _axis, n in self.cuts)

    @property
    def axis_label(self) -> str:
        return " x ".join(axis.name for axis, _n in self.cuts)

    def describe(self) -> str:
        return _label(self.cuts)


def split_bands(extent: int, count: int, unit: int = 1) -> list[tuple[int, int]]:
    """``count`` bands covering [0, extent), balanced, boundaries at multiples of ``unit``."""
    groups = extent // unit
    q, r = divmod(groups, count)
    bands, at = [], 0
    for i in range(count):
        size = (q + (1 if i < r else 0)) * unit
        bands.append((at, at + size))
        at += size
    return bands


def opset_of(node: Node, opset: int | None) -> int:
    return opset if opset is not None else 17


def describe_tile(node: Node, axes: Sequence[Axis], bands: Bands, k: tuple[int, int], opset: int) -> TileShape:
    """Tile ``bands`` of ``node`` (fused or not), tile ``k[0]`` of a K chain of ``k[1]``."""
    base = base_node(node)
    rule = RULES[base.op_type]
    tile = rule.tile(base, bands, opset)
    y = node.outputs[0]
    ob = out_box(node, bands, axes)
    inputs: list[tuple[Any, Box] | None] = [None if box is None else (i, box) for i, box in enumerate(tile.inputs)]
    parts = list(node.attrs.get(EPILOGUE_ATTR, [])) if is_fused(node) else []
    nbase = base_input_count(len(node.inputs), epilogue_of(node))
    if parts and any(i >= nbase for i in tile.replace):   # the added input would take an operand's place
        raise Untileable(f"{base.op_type} tile adds an input ahead of its epilogue's operands")
    epilogue: list[str] = []
    if k[0] > 0:   # add the previous partial sum first, then (last tile) the node's own epilogue
        epilogue.append("Add")
        inputs.append((ACC, ob))
    if k[0] == k[1] - 1:
        epilogue += parts
        for j, v in enumerate(node.inputs[nbase:]):
            assert v is not None
            inputs.append((nbase + j, broadcast_box(v, ob, y.shape)))
    if not epilogue:
        while inputs and inputs[-1] is None:
            inputs.pop()
    attrs = {key: value for key, value in tile.attrs.items() if key != EPILOGUE_ATTR}
    if epilogue:
        attrs[EPILOGUE_ATTR] = epilogue
    # A composite's tile stays in the fused domain: the model's opset may predate its op (hetc.ir.fused).
    domain = FUSED_DOMAIN if epilogue or is_composite(node) else ""
    return TileShape(base.op_type, domain, attrs, tuple(inputs), ob, dict(tile.replace),
                     partial=k[0] < k[1] - 1)


def source_value(node: Node, shape: TileShape, source: Any) -> Value:
    """The value tile input ``source`` reads: the node's input, the K chain's accumulator (ACC), or an input
    the tile adds (a constant in ``shape.replace`` past the node's inputs)."""
    y = node.outputs[0]
    if source == ACC:
        return y
    if source >= len(node.inputs):
        array = np.asarray(shape.replace[source])
        return Value(f"{y.name}_in{source}", dtype_from_numpy(array.dtype), tuple(array.shape), const=array)
    v = node.inputs[source]
    assert v is not None
    return v


def sketch(node: Node, shape: TileShape) -> Node:
    """A throw-away node with the tile's shapes, for capability and cost (no constant is sliced)."""
    y = node.outputs[0]
    ins: list[Value | None] = []
    for entry in shape.inputs:
        if entry is None:
            ins.append(None)
            continue
        source, box = entry
        v = source_value(node, shape, source)
        ins.append(Value(v.name, v.dtype, box_shape(box)))
    return Node(node.id, shape.op_type, node.name, ins, [Value(y.name, y.dtype, box_shape(shape.out))],
                shape.attrs, shape.domain)


# ---------------------------------------------------------------------------------------------- planning
@dataclass
class _Context:
    node: Node
    target: Any
    axes: list[Axis]
    opset: int
    device: str
    cores: int
    budget: int
    alignment: int


def _classes(bands: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Representative band indices with their multiplicity: bands of one size at the same kind of position
    (first, last, inner) make identical tiles."""
    seen: dict[tuple, list[int]] = {}
    for i, (lo, hi) in enumerate(bands):
        seen.setdefault((hi - lo, i == 0, i == len(bands) - 1), []).append(i)
    return [(idx[0], len(idx)) for idx in seen.values()]


def _representatives(ctx: _Context, cuts: Sequence[tuple[Axis, int]]) -> list[tuple[TileShape, int]]:
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


def _fits(ctx: _Context, cuts: Sequence[tuple[Axis, int]]) -> bool:
    try:
        reps = _representatives(ctx, cuts)
    except Untileable:
        return False
    return all(_tile_bytes(ctx, t) <= ctx.budget for t, _m in reps)


def _tile_bytes(ctx: _Context, tile: TileShape) -> int:
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


def _dma_ns(ctx: _Context, nbytes: int) -> float:
    target = ctx.target
    home = target.devices[ctx.device].memory
    total = 0.0
    for src, dst in target.route(target.dram, home):
        engine = target.engines_between(src, dst)[0]
        total += target.transfer_ns(nbytes, engine.name)
    return total


def _estimate(ctx: _Context, cuts: Sequence[tuple[Axis, int]]) -> float | None:
    """Estimated ns of the tiles of a cut (module docstring), None when a tile has no kernel on the device."""
    target, node = ctx.target, ctx.node
    total_pipe, first, n, moved = 0.0, math.inf, 0, 0
    for tile, mult in _representatives(ctx, cuts):
        s = sketch(node, tile)
        if not kernel_support(target, s, ctx.device):
            return None
        compute = target.cost(s, ctx.device)
        dma, nbytes = 0.0, 0
        for entry, value in zip(tile.inputs, s.inputs):
            if entry is not None and entry[0] != ACC and value is not None:
                nbytes += value.nbytes
                dma += _dma_ns(ctx, value.nbytes)
        if not tile.partial:
            nbytes += s.outputs[0].nbytes
            dma += _dma_ns(ctx, s.outputs[0].nbytes)
        total_pipe += mult * max(compute, dma)
        first = min(first, dma)
        n += mult
        moved += mult * nbytes
    cores = _parallel(ctx, cuts)   # the K tiles of one output block run one after the other
    per_core = total_pipe * math.ceil(n / cores) / n + first
    sync = target.sync_ns if cores > 1 else 0.0
    return max(per_core + sync, moved / target.memories[target.dram].bandwidth)


def _parallel(ctx: _Context, cuts: Sequence[tuple[Axis, int]]) -> int:
    """Cores a cut can keep busy: one per output block at most."""
    return min(ctx.cores, math.prod(n for a, n in cuts if a.out_axis is not None))


def _whole_ns(ctx: _Context) -> float:
    weights = sum(v.nbytes for v in {id(v): v for v in ctx.node.present_inputs if v.is_const}.values())
    return ctx.target.cost(ctx.node, ctx.device) + (_dma_ns(ctx, weights) if weights else 0.0)


def _min_count(ctx: _Context, axis: Axis, fixed: Sequence[tuple[Axis, int]]) -> int | None:
    """The fewest tiles along ``axis`` (with ``fixed`` cuts) whose every tile fits, by bisection."""
    fixed_count = math.prod(n for _a, n in fixed)
    hi = min(axis.extent // axis.unit, MAX_TILES // max(fixed_count, 1))
    if hi < 1 or not _fits(ctx, [*fixed, (axis, hi)]):
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits(ctx, [*fixed, (axis, mid)]):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _candidates(ctx: _Context) -> list[tuple[tuple[Axis, int], ...]]:
    """Cuts along one axis or two whose tiles fit, each with the fewest tiles for its shape, plus rounded up
    to a multiple of the cores."""
    found: set[tuple[tuple[Axis, int], ...]] = set()
    for a in ctx.axes:
        n = _min_count(ctx, a, [])
        if n is not None:
            found.add(((a, n),))
    for i, a in enumerate(ctx.axes):
        for j, b in enumerate(ctx.axes):
            if a.out_axis is None or j == i or (b.out_axis is not None and j < i):
                continue   # K only second; each pair of output axes once
            for na in _FIRST_COUNTS[1:]:
                if na > a.extent // a.unit or na > MAX_TILES // 2:
                    break
                nb = _min_count(ctx, b, [(a, na)])
                if nb is not None and nb > 1:
                    found.add(((a, na), (b, nb)))
                if nb == 1:
                    break
    if ctx.cores > 1:
        for cut in list(found):
            a, n = cut[0]
            rounded = -(-n // ctx.cores) * ctx.cores
            if a.out_axis is not None and rounded != n and rounded <= a.extent // a.unit:
                found.add(((a, rounded), *cut[1:]))
    return sorted(found, key=lambda c: [(a.name, n) for a, n in c])


def eligible_accelerators(target: Any, node: Node) -> list[str]:
    """Accelerators that pass every capability check for ``node`` but the working set."""
    return [d for d, dev in target.devices.items() if dev.kind != "cpu" and kernel_support(target, node, d)]


# node.memo[_MEMO_KEY]: (id(target), budget fraction) -> (the node's signature, its plan).
_MEMO_KEY = "tiling.plans"


def _signature(node: Node) -> tuple:
    return (node.op_type, node.domain, tuple(None if v is None else v.shape for v in node.inputs),
            tuple(v.shape for v in node.outputs), repr(sorted(node.attrs.items(), key=lambda kv: kv[0]))[:2000])


def plan_node(target: Any, node: Node, opset: int | None = None,
              fraction: float = TILE_BUDGET_FRACTION) -> TilePlan | str | None:
    """The tiling of ``node`` for ``target``: a TilePlan; a string saying why it cannot be tiled to fit
    (the node is too big for an accelerator that could otherwise run it); or None (nothing to do: no
    accelerator could run it, or it fits and no split pays). Cached per node and target."""
    if node.tile is not None:
        return None   # a tile fits by construction
    per_target = node.memo.setdefault(_MEMO_KEY, {})
    key = (id(target), fraction)
    signature = _signature(node)
    hit = per_target.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    # Nodes of one shape get one plan (a network repeats its layers): the plan names no value.
    shared_key = (signature, opset, tuple(v is not None and v.is_const for v in node.inputs),
                  len({id(v) for v in node.present_inputs}), fraction)
    shared = target._cache.setdefault("tile-plans", {})
    if shared_key not in shared:
        shared[shared_key] = _plan(target, node, opset_of(node, opset), fraction)
    result = shared[shared_key]
    per_target[key] = (signature, result)
    return result


def _plan(target: Any, node: Node, opset: int, fraction: float) -> TilePlan | str | None:
    if node.tile is not None or len(node.outputs) != 1:
        return None
    eligible = eligible_accelerators(target, node)
    if not eligible:
        return None
    too_big = [d for d in eligible if working_set_bytes(node, target.memories[target.devices[d].memory].alignment)
               > target.memories[target.devices[d].memory].size]
    device = min(eligible, key=lambda d: (target.cost(node, d), eligible.index(d)))
    kind = target.devices[device].kind
    cores = sum(1 for d in eligible if target.devices[d].kind == kind)
    if device not in too_big and cores < 2:
        return None   # the fastest device holds it whole: tiles for a smaller, slower one would only cost launches
    homes = [target.memories[target.devices[d].memory] for d in eligible]
    smallest = min(homes, key=lambda m: m.size)
    budget = int(smallest.size * fraction)
    alignment = max(m.alignment for m in homes)
    base = base_node(node)
    rule = RULES.get(base.op_type)
    if rule is None:
        return f"hetc has no tiling rule for {base.op_type}" if too_big else None
    try:
        axes = rule.axes(base, opset)
    except Untileable as exc:
        return f"{base.op_type} cannot be tiled: {exc}" if too_big else None
    if not axes:
        return f"{base.op_type} of these shapes has no axis to cut along" if too_big else None
    ctx = _Context(node, target, axes, opset, device, cores, budget, alignment)
    need = working_set_bytes(node, alignment)
    if device in too_big:
        options = _candidates(ctx)
        if not options:
            return _why_not(ctx)
        scored = [(e, c) for c in options if (e := _estimate(ctx, c)) is not None]
        if not scored:
            return f"no tile of {base.op_type} that fits has a kernel on {device}"
        estimate, cuts = _pick(scored)
        why = (f"working set {need:,} B over the {budget:,} B tile budget ({fraction:.0%} of {smallest.name}: "
               f"one tile loading, one computing, one draining); {_label(cuts)} is the fastest cut that fits: {estimate / 1000:,.1f} µs estimated "
               f"on {device}" + (f" and {_parallel(ctx, cuts) - 1} more {kind} cores" if _parallel(ctx, cuts) > 1 else ""))
        return TilePlan(tuple(cuts), device, budget, estimate, None, why)
    return _split(ctx, need, smallest.name)


def _split(ctx: _Context, need: int, memory: str) -> TilePlan | None:
    """A node that fits whole, cut into at least as many parts as cores when that is estimated faster."""
    whole = _whole_ns(ctx)
    launch = ctx.target.devices[ctx.device].launch_ns
    if launch + ctx.target.sync_ns + (whole - launch) / ctx.cores >= whole:
        return None   # even a perfect split of the compute would not pay for a launch and the join
    scored = []
    for axis in ctx.axes:
        if axis.out_axis is None:
            continue   # a K chain runs its tiles one after the other: no parallelism
        for n in (ctx.cores, 2 * ctx.cores):
            if n > axis.extent // axis.unit or not _fits(ctx, [(axis, n)]):
                continue
            estimate = _estimate(ctx, [(axis, n)])
            if estimate is not None:
                scored.append((estimate, ((axis, n),)))
    if not scored:
        return None
    estimate, cuts = _pick(scored)
    if estimate >= whole:
        return None
    why = (f"fits whole, but split across {ctx.cores} {ctx.target.devices[ctx.device].kind} cores: {_label(cuts)} "
           f"estimated {estimate / 1000:,.1f} µs against {whole / 1000:,.1f} µs whole on {ctx.device}")
    return TilePlan(cuts, ctx.device, ctx.budget, estimate, whole, why)


def _pick(scored: list[tuple[float, Any]]) -> tuple[float, Any]:
    """The fastest cut, except that a cut with fewer tiles within ``NEAR_BEST`` of it wins: an estimate is
    not that precise, and every tile costs the scheduler tasks."""
    best = min(e for e, _c in scored)
    near = [(e, c) for e, c in scored if e <= best * (1 + NEAR_BEST)]
    # then the outer axes: their tiles are fewer, longer contiguous runs for the DMA descriptors
    return min(near, key=lambda ec: (_count(ec[1]), ec[0], [99 if a.out_axis is None else a.out_axis for a, _n in ec[1]]))


def _why_not(ctx: _Context) -> str:
    """Why no cut fits: the smallest tile along every axis at once, or the cap."""
    cuts = [(a, a.extent // a.unit) for a in ctx.axes]
    finest = [(a, n) for a, n in cuts][:2]
    try:
        reps = _representatives(ctx, finest)
        smallest = max(working_set_bytes(sketch(ctx.node, t), ctx.alignment) for t, _m in reps)
    except Untileable as exc:
        return f"{ctx.node.op_type} cannot be tiled: {exc}"
    if smallest > ctx.budget:
        return (f"even its smallest tile ({_label(finest)}) needs {smallest:,} B, over the {ctx.budget:,} B "
                f"tile budget")
    return (f"it would need more than {MAX_TILES} tiles (the cap per node) to fit the {ctx.budget:,} B tile "
            f"budget along {', '.join(a.name for a in ctx.axes)}")


def _count(cuts: Sequence[tuple[Axis, int]]) -> int:
    return math.prod(n for _a, n in cuts)


def _label(cuts: Sequence[tuple[Axis, int]]) -> str:
    return " x ".join(f"{n} bands of {a.name}" for a, n in cuts) + f" ({_count(cuts)} tiles)"


def tiling_verdict(target: Any, node: Node) -> str:
    """What capability adds to a working-set refusal: how the tiler would cut the node, or why it cannot."""
    plan = plan_node(target, node)
    if isinstance(plan, TilePlan):
        return f"tiling would cut it into {_label(plan.cuts)} (tiling is off for this graph)"
    if isinstance(plan, str):
        return f"it cannot be tiled to fit: {plan}"
    return "it is not tiled"


def group_plan(target: Any, node: Node, opset: int | None = None) -> TilePlan | None:
    """A grouped convolution that no accelerator runs as such (``grouped_conv = false``) but one runs as plain
    convolutions: cut into one tile per group, each a group-1 Conv over its own input and output channels
    (AlexNet's and ShuffleNet's grouped layers). None when that does not apply."""
    base = base_node(node)
    group = int(base.attr("group", 1))
    if node.tile is not None or base.op_type != "Conv" or group <= 1 or len(node.outputs) != 1:
        return None
    weight = base.inputs[1]
    if weight is None or weight.shape[1] == 1 or group > MAX_TILES:
        return None   # depthwise: its own capability key decides
    probe = Node(node.id, node.op_type, node.name, list(node.inputs), list(node.outputs),
                 {**node.attrs, "group": 1}, node.domain)
    plain = [d for d, dev in target.devices.items()
             if dev.kind != "cpu" and not kernel_support(target, node, d) and kernel_support(target, probe, d)]
    if not plain:
        return None
    channels = next((a for a in RULES["Conv"].axes(base, opset_of(node, opset)) if a.name == "channels"), None)
    if channels is None or channels.extent // channels.unit != group:
        return None
    device = min(plain, key=lambda d: (target.cost(probe, d), plain.index(d)))
    why = (f"grouped convolution (group = {group}): {device} runs it as {group} plain convolutions, one per group "
           f"(its limit grouped_conv = false)")
    return TilePlan(((channels, group),), device, 0, 0.0, None, why)
