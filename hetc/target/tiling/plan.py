"""Choosing a tiling: which axes, how many tiles, judged by the cost model.

One driver for every op: the rule of the node's op (``RULES``) lists the axes it may be cut along; the driver
tries cuts along one axis or two, keeps those whose every tile fits the tile budget, estimates each with the
cost model and keeps the fastest.

* **Budget.** A tile's working set (``working_set_bytes``, aligned) is at most ``TILE_BUDGET_FRACTION`` of the
  smallest home memory among the accelerators that could run the node but for its size. A third: while tile k
  computes, tile k+1's operands arrive and tile k-1's output drains, three tiles' buffers at once. (Half, which
  counted the load and the drain as one tile, left the planner no room on 2 MiB cores: VGG-19's packing on
  multi-npu overflowed by 1 MB at instants where nothing could leave.) ``hetc.planning`` tries half as well
  where the planner's repairs lengthened a schedule by much, and ships the faster plan.
* **Estimate.** Per tile, its compute time ``Target.cost`` (launch + roofline on the tile's own shapes, so the
  halo's extra rows count) and its DMA time (each weight slice fetched from DRAM per tile, so re-fetches
  count; each input box fetched from, and the output drained to, where activations are joined:
  ``Target.join_memory``, multi-npu's L2 for those that fit it, else DRAM). A core runs its tiles as a
  two-stage pipeline, so it takes ``sum(max(compute, dma)) + the first load``; tiles spread over the
  identical cores that can run them, plus one semaphore when more than one core takes part; DRAM bandwidth
  bounds what crosses DRAM.
* **Splitting.** On a target with several identical cores, a node that fits whole is also cut into at least
  as many parts as cores when that estimate beats running it whole on one core (its activations assumed on
  chip, its weights fetched once): the parts pay their own launches, activation transfers and the join's
  semaphore, against a fraction of the compute. Their number along the axes chosen is then judged with the
  weights loaded ahead (``CutContext.weights_ahead``): more parts per core only overlap weight copies that
  need not come just in time, and each costs a launch.
* **Predicated nodes** (a mixture's experts, hetc.ir.predicates) that fit whole stay whole: the experts a
  router picks run side by side on the cores already, and each part of a split expert needs its own copy of
  the gate and its semaphores (the one-token MoE on `multi-npu`, every expert split in four: 213 predicated
  tasks, expected 38.2 µs; whole: 33.5 µs, tools/bench_moe.py).
* **Spreading.** On a target whose devices differ (an NPU, a DSP and the CPU), a node the fastest device
  holds whole is cut into equal parts when every device that can run one, taking parts while it would
  finish them first, is estimated at least ``NEAR_BEST`` faster than the fastest device alone
  (``parts.spread_over_devices``); an input already joined off the cores (a graph input, a cut node's
  output: ``_joined_inputs``) costs the parts no more than the whole node. A grouped convolution cut per
  group for want of a kernel has its groups cut into row bands by the same rule (``parts.spread_groups``).
* **Cap.** At most ``MAX_TILES`` (512) tiles per node. Every tile is a compute task and two or three DMA tasks
  for the scheduler, so 512 tiles of one node are about two thousand tasks, several times a whole light model;
  the largest layer of the light models, VGG-19's fc6 (411 MB of fp32 weights), needs more than 588 tiles of a
  third of a 2 MiB multi-npu core and so stays whole there, on the CPU, which streams those weights from DRAM
  no slower than the cores' DMA would (DRAM bounds both). A node that needs more is left whole and falls
  back, its reason saying so.
"""
from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Sequence

from hetc.ir import Node
from hetc.ir.fused import base_node
from hetc.target.capability import kernel_support, plain_convolutions, working_set_bytes
from hetc.target.ops import conv_groups
from hetc.target.tiling.estimate import (TILE_BUDGET_FRACTION, CutContext, TilePlan, cut_estimate, cut_label, fits,
                                         parallel_cores, pick_cut, representatives)
from hetc.target.tiling.parts import split_across_cores, spread_groups, spread_over_devices
from hetc.target.tiling.axes import Axis, Untileable
from hetc.target.tiling.rules import RULES
from hetc.target.tiling.shapes import opset_of, sketch

MAX_TILES = 512
# Counts tried along the first axis of a two-axis cut (the second gets the fewest that fit).
_FIRST_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256)


def _min_count(ctx: CutContext, axis: Axis, fixed: Sequence[tuple[Axis, int]]) -> int | None:
    """The fewest tiles along ``axis`` (with ``fixed`` cuts) whose every tile fits, by bisection."""
    fixed_count = math.prod(n for _a, n in fixed)
    hi = min(axis.extent // axis.unit, MAX_TILES // max(fixed_count, 1))
    if hi < 1 or not fits(ctx, [*fixed, (axis, hi)]):
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(ctx, [*fixed, (axis, mid)]):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _candidates(ctx: CutContext) -> list[tuple[tuple[Axis, int], ...]]:
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


def cut_context(target: Any, node: Node, axes: list[Axis], opset: int, fraction: float,
                eligible: list[str]) -> CutContext:
    """What a cut of ``node`` is judged against: the fastest of the ``eligible`` accelerators, the identical
    cores of its kind, and a budget of ``fraction`` of the smallest home among them (module docstring)."""
    device = min(eligible, key=lambda d: (target.cost(node, d), eligible.index(d)))
    kind = target.devices[device].kind
    cores = sum(1 for d in eligible if target.devices[d].kind == kind)
    homes = [target.memories[target.devices[d].memory] for d in eligible]
    budget = int(min(m.size for m in homes) * fraction)
    alignment = max(m.alignment for m in homes)
    return CutContext(node, target, axes, opset, device, cores, budget, alignment, fraction)


# node.memo[_MEMO_KEY]: (id(target), budget fraction) -> (the node's signature, which of its inputs are joined
# off the cores, its plan).
_MEMO_KEY = "tiling.plans"


def _signature(node: Node) -> tuple:
    return (node.op_type, node.domain, tuple(None if v is None else v.shape for v in node.inputs),
            tuple(v.shape for v in node.outputs), repr(sorted(node.attrs.items(), key=lambda kv: kv[0]))[:2000])


def plan_node(target: Any, node: Node, opset: int | None = None,
              fraction: float = TILE_BUDGET_FRACTION) -> TilePlan | str | None:
    """The tiling of ``node`` for ``target``: a TilePlan (a grouped convolution no accelerator runs as such
    gets ``group_plan``'s); a string saying why it cannot be tiled to fit (the node is too big for an
    accelerator that could otherwise run it); or None (nothing to do: no accelerator could run it, or it fits
    and no split pays). Cached per node and target."""
    if node.tile is not None:
        return None   # a tile fits by construction
    per_target = node.memo.setdefault(_MEMO_KEY, {})
    key = (id(target), fraction)
    signature = _signature(node)
    joined = _joined_inputs(target, node, opset, fraction)
    hit = per_target.get(key)
    if hit is not None and hit[:2] == (signature, joined):
        return hit[2]
    # Nodes of one shape get one plan (a network repeats its layers): the plan names no value.
    shared_key = (signature, opset, tuple(v is not None and v.is_const for v in node.inputs),
                  len({id(v) for v in node.present_inputs}), fraction, joined)
    shared = target._cache.setdefault("tile-plans", {})
    if shared_key not in shared:
        plain = _plain_group_devices(target, node)
        shared[shared_key] = (group_plan(target, node, plain, opset, fraction) if plain
                              else _plan(target, node, opset_of(node, opset), fraction, joined))
    result = shared[shared_key]
    per_target[key] = (signature, joined, result)
    return result


def _joined_inputs(target: Any, node: Node, opset: int | None, fraction: float) -> tuple[bool, ...]:
    """Per input of ``node``, whether it is an activation that reaches it joined off the cores whatever
    ``node``'s own plan: a graph input (in DRAM), or the output of a node that is cut (its parts are joined in
    ``Target.join_memory``). Parts spread over devices read such an input where it is, as the whole node
    would (``spread_over_devices``)."""
    return tuple(v is not None and not v.is_const and (v.producer is None or v.producer.tile is not None
                 or isinstance(_producer_plan(target, v.producer, opset, fraction), TilePlan))
                 for v in node.inputs)


_looking_back: ContextVar[bool] = ContextVar("tiling_looking_back", default=False)


def _producer_plan(target: Any, producer: Node, opset: int | None, fraction: float) -> TilePlan | str | None:
    """The plan ``producer`` has: known already where ``tile_graph`` plans the graph (in graph order), else
    planned here, one level up only (its own producers not yet planned count as not cut)."""
    hit = producer.memo.get(_MEMO_KEY, {}).get((id(target), fraction))
    if hit is not None and hit[0] == _signature(producer):
        return hit[2]
    if _looking_back.get():
        return None
    token = _looking_back.set(True)
    try:
        return plan_node(target, producer, opset, fraction)
    finally:
        _looking_back.reset(token)


def _plan(target: Any, node: Node, opset: int, fraction: float,
          joined: tuple[bool, ...] = ()) -> TilePlan | str | None:
    if node.tile is not None or len(node.outputs) != 1:
        return None
    eligible = eligible_accelerators(target, node)
    if not eligible:
        return None
    too_big = [d for d in eligible if working_set_bytes(node, target.memories[target.devices[d].memory].alignment)
               > target.memories[target.devices[d].memory].size]
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
    ctx = cut_context(target, node, axes, opset, fraction, eligible)
    device, cores, budget, alignment, kind = (ctx.device, ctx.cores, ctx.budget, ctx.alignment,
                                              target.devices[ctx.device].kind)
    if device not in too_big:   # it fits whole: parts only where several devices run them at once
        if node.when is not None:
            return None   # a predicated expert stays whole (module docstring)
        if cores >= 2:
            return split_across_cores(replace(ctx, fraction=TILE_BUDGET_FRACTION))
        home = target.memories[target.devices[device].memory]
        return spread_over_devices(CutContext(node, target, axes, opset, device, 1, int(home.size * fraction),
                                              home.alignment, fraction, joined_inputs=joined))
    options = _candidates(ctx)
    if not options:
        return _why_not(ctx)
    scored = [(e, c) for c in options if (e := cut_estimate(ctx, c)) is not None]
    if not scored:
        return f"no tile of {base.op_type} that fits has a kernel on {device}"
    estimate, cuts = pick_cut(scored)
    more = parallel_cores(ctx, cuts) - 1
    smallest = min((target.memories[target.devices[d].memory] for d in eligible), key=lambda m: m.size)
    why = (f"working set {working_set_bytes(node, alignment):,} B over the {budget:,} B tile budget ({fraction:.0%} "
           f"of {smallest.name}: one tile loading, one computing, one draining); {cut_label(cuts)} is the fastest "
           f"cut that fits: {estimate / 1000:,.1f} µs estimated on {device}"
           + (f" and {more} more {kind} cores" if more else ""))
    return TilePlan(tuple(cuts), device, budget, estimate, None, why)


def _why_not(ctx: CutContext) -> str:
    """Why no cut fits: the smallest tile along every axis at once, or the cap."""
    cuts = [(a, a.extent // a.unit) for a in ctx.axes]
    finest = [(a, n) for a, n in cuts][:2]
    try:
        reps = representatives(ctx, finest)
        smallest = max(working_set_bytes(sketch(ctx.node, t), ctx.alignment) for t, _m in reps)
    except Untileable as exc:
        return f"{ctx.node.op_type} cannot be tiled: {exc}"
    if smallest > ctx.budget:
        return (f"even its smallest tile ({cut_label(finest)}) needs {smallest:,} B, over the {ctx.budget:,} B "
                f"tile budget")
    return (f"it would need more than {MAX_TILES} tiles (the cap per node) to fit the {ctx.budget:,} B tile "
            f"budget along {', '.join(a.name for a in ctx.axes)}")


def tiling_verdict(target: Any, node: Node) -> str:
    """What capability adds to a working-set refusal: how the tiler would cut the node, or why it cannot."""
    plan = plan_node(target, node)
    if isinstance(plan, TilePlan):
        return f"tiling would cut it into {cut_label(plan.cuts)} (tiling is off for this graph)"
    if isinstance(plan, str):
        return f"it cannot be tiled to fit: {plan}"
    return "it is not tiled"


def _plain_group_devices(target: Any, node: Node) -> list[str]:
    """The accelerators that run ``node``, a grouped convolution, as plain convolutions, one per group
    (``grouped_conv = false``: capability.plain_convolutions); none for any other node, or beyond
    ``MAX_TILES`` groups (one tile per group must stay possible)."""
    group = conv_groups(base_node(node))
    if node.tile is not None or group <= 1 or group > MAX_TILES or len(node.outputs) != 1:
        return []
    return [d for d, dev in target.devices.items()
            if plain_convolutions(group, dev) > 1 and kernel_support(target, node, d)]


def group_plan(target: Any, node: Node, plain: list[str], opset: int | None = None,
               fraction: float = TILE_BUDGET_FRACTION) -> TilePlan | None:
    """The tiling of a grouped convolution that the accelerators ``plain`` run as plain convolutions, one per
    group (``_plain_group_devices``, not empty): a spread of its groups over devices where that is estimated
    faster; one tile per group, each a group-1 Conv over its own channels, where the node exceeds the tile
    budget (AlexNet's grouped layers) or several cores can share its groups; else None: the node stays whole
    on the one accelerator, a task whose groups write their output channels in place (ShuffleNet's on
    `edge-soc`, whose group tiles' outputs went to DRAM and back to be assembled)."""
    base = base_node(node)
    group = conv_groups(base)
    axes = RULES["Conv"].axes(base, opset_of(node, opset))
    channels = next((a for a in axes if a.name == "channels"), None)
    if channels is None or channels.extent // channels.unit != group:
        return None
    probe = Node(node.id, node.op_type, node.name, list(node.inputs), list(node.outputs),
                 {**node.attrs, "group": 1}, node.domain)
    device = min(plain, key=lambda d: (target.cost(probe, d), plain.index(d)))
    why = (f"grouped convolution (group = {group}): {device} runs it as {group} plain convolutions, one per group "
           f"(its limit grouped_conv = false)")
    home = target.memories[target.devices[device].memory]
    budget = int(home.size * fraction)
    staged = working_set_bytes(node, home.alignment) > budget
    ctx = CutContext(node, target, axes, opset_of(node, opset), device, 1, budget, home.alignment, fraction)
    whole_on_chip = not staged and len(plain) == 1
    spread = spread_groups(ctx, (channels, group), whole_on_chip)
    if spread is not None:
        return TilePlan(spread.cuts, device, budget, spread.estimate_ns, spread.whole_ns, f"{why}; {spread.why}",
                        staged)
    if whole_on_chip:
        return None
    if not staged:   # several cores run it: its groups are tiles they share (whole on one core is slower)
        why += f"; {len(plain)} cores share its groups"
    return TilePlan(((channels, group),), device, 0, 0.0, None, why, staged)
