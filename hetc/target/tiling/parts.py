"""Nodes that fit whole, cut into parts that run at the same time on several devices: across identical cores
(``split_across_cores``) or over devices that differ (``spread_over_devices``); plan.py's docstring states
when each applies."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from hetc.target.capability import kernel_support
from hetc.target.tiling.estimate import (NEAR_BEST, CutContext, TilePlan, cut_count, cut_estimate, cut_label,
                                         dma_by_source, dma_ns, fits, joined_in, pick_cut, representatives,
                                         tile_bytes, whole_ns)
from hetc.target.tiling.axes import Axis
from hetc.target.tiling.shapes import sketch, source_value


def split_across_cores(ctx: CutContext) -> TilePlan | None:
    """A node that fits whole, cut into at least as many parts as cores when that is estimated faster."""
    whole = whole_ns(ctx)
    launch = ctx.target.devices[ctx.device].launch_ns
    if launch + ctx.target.sync_ns + (whole - launch) / ctx.cores >= whole:
        return None   # even a perfect split of the compute would not pay for a launch and the join
    parallel = [axis for axis in ctx.axes if axis.out_axis is not None]   # (a K chain runs in sequence)
    scored = _scored(ctx, [[(axis, n)] for axis in parallel for n in (ctx.cores, 2 * ctx.cores)])
    if not scored:
        # No part cut along one axis fits the tile budget (a 1x1 convolution whose every channel band reads
        # the whole input, every row band all the weights): cut along two, as a node too big to fit is.
        scored = _scored(ctx, [[(a, m), (b, n)] for i, a in enumerate(parallel) for b in parallel[i + 1:]
                               for m in (2, 4, 8) for n in (2, 4, 8) if ctx.cores <= m * n <= 4 * ctx.cores])
    if not scored:
        return None
    estimate, cuts = pick_cut(scored)
    if estimate >= whole:
        return None
    # As few parts along the axes chosen as do as well once the weights load ahead (``weights_ahead``): more
    # parts overlap their weights' copies with their compute, which only pays where the copies come just in
    # time (the GPT decoder's matmuls in 8 parts, 2 per core, each paying a launch: tools/bench_shipped.py).
    ahead = replace(ctx, weights_ahead=True)
    axes = [a for a, _n in cuts]
    same_axes = [(e, c) for _e, c in scored if [a for a, _n in c] == axes
                 and (e := cut_estimate(ahead, c)) is not None]
    cuts = pick_cut(same_axes)[1]
    estimate = dict((c, e) for e, c in scored)[cuts]
    why = (f"fits whole, but split across {ctx.cores} {ctx.target.devices[ctx.device].kind} cores: {cut_label(cuts)} "
           f"estimated {estimate / 1000:,.1f} µs against {whole / 1000:,.1f} µs whole on {ctx.device}")
    return TilePlan(cuts, ctx.device, ctx.budget, estimate, whole, why)


def _scored(ctx: CutContext, options: list[list[tuple[Axis, int]]]) -> list[tuple[float, tuple]]:
    """The estimate of each cut in ``options`` whose parts exist (no more bands than units) and fit."""
    scored = []
    for cuts in options:
        if any(n > axis.extent // axis.unit for axis, n in cuts) or not fits(ctx, cuts):
            continue
        estimate = cut_estimate(ctx, cuts)
        if estimate is not None:
            scored.append((estimate, tuple(cuts)))
    return scored


SPREAD_COUNTS = (2, 3, 4, 5, 6, 8, 12, 16)


def spread_over_devices(ctx: CutContext) -> TilePlan | None:
    """A node the fastest device holds whole, on a target whose other devices differ from it (edge-soc's NPU,
    DSP and CPU): cut into equal parts when every device that can run a part, each taking parts while it
    would finish them first, is estimated to beat the fastest device alone. Weights are left out on both
    sides (a schedule prefetches them behind other work, whole or in slices); activations are not: the parts
    read their input from DRAM and write their output there (``graph._staged``), so both cross DRAM once more than
    the whole node's, and each part on an accelerator loads and drains its own slices. An input that reaches
    the node joined off the cores anyway (``CutContext.joined_inputs``: a graph input, a cut node's output)
    crosses nothing more."""
    target, node = ctx.target, ctx.node
    devices = [d for d in _device_order(ctx) if kernel_support(target, node, d)]
    if len(devices) < 2:
        return None
    whole = target.cost(node, ctx.device)
    floor = min(target.devices[d].launch_ns for d in devices) + target.sync_ns
    if floor >= whole / 2:
        return None   # two parts could not pay for their launches and the join
    # An input joined off the cores already (a graph input, a cut node's output) is read where it is either way
    joined = {id(v) for v, off in zip(node.inputs, ctx.joined_inputs) if off}
    activations = {id(v): v for v in node.present_inputs if not v.is_const and id(v) not in joined}.values()
    out = node.outputs[0]
    staging = (dma_by_source(ctx, [(v.nbytes, joined_in(ctx, v)) for v in activations])
               + dma_ns(ctx, out.nbytes, source=joined_in(ctx, out)))
    options = [[(axis, n)] for axis in ctx.axes if axis.out_axis is not None   # (a K chain runs in sequence)
               for n in SPREAD_COUNTS if n <= axis.extent // axis.unit]
    best = _worth_spreading(ctx, options, devices, whole, staging)
    if best is None:
        return None
    estimate, cuts, used = best
    why = (f"fits whole, but split over {', '.join(used)}: {cut_label(cuts)} estimated {estimate / 1000:,.1f} µs "
           f"(parts staged through DRAM) against {whole / 1000:,.1f} µs whole on {ctx.device}")
    return TilePlan(cuts, ctx.device, ctx.budget, estimate, whole, why)


def spread_groups(ctx: CutContext, groups: tuple[Axis, int], whole_on_chip: bool = False) -> TilePlan | None:
    """A grouped convolution cut one tile per group (``plan.group_plan``), its groups cut again into row bands
    when the bands, spread over the devices as ``spread_over_devices`` spreads parts, are estimated at least
    ``NEAR_BEST`` faster than the alternative: the groups whole on those devices, or with ``whole_on_chip`` the
    node whole on ``ctx.device``, its output left in the scratchpad, where the bands' output goes to DRAM and
    its reader loads it back (ShuffleNet's small grouped layers on edge-soc: spread, 6.7% slower in all). Both
    read their input the same way (in place or staged, as ``group_plan`` decides), so staging is left out of
    both sides. (AlexNet's conv2 on edge-soc: two groups, each 1.2 ms on the NPU and about three times that on
    the CPU, ran one after the other on the NPU while the CPU waited.)"""
    devices = _device_order(ctx)   # _spread_estimate keeps those with a kernel for a group's plain convolution
    if whole_on_chip:
        out = ctx.node.outputs[0]
        whole, reload = ctx.target.cost(ctx.node, ctx.device), dma_ns(ctx, out.nbytes, source=joined_in(ctx, out))
    else:
        groups_whole = _spread_estimate(ctx, [groups], devices)
        whole, reload = (None if groups_whole is None else groups_whole[0]), 0.0
    rows = next((a for a in ctx.axes if a.name == "rows"), None)
    if whole is None or rows is None:
        return None
    options = [[groups, (rows, n)] for n in SPREAD_COUNTS if n <= rows.extent // rows.unit]
    best = _worth_spreading(ctx, options, devices, whole, reload)
    if best is None:
        return None
    estimate, cuts, used = best
    return TilePlan(cuts, ctx.device, ctx.budget, estimate, whole,
                    f"{cut_label(cuts)} spread over {', '.join(used)}: estimated {estimate / 1000:,.1f} µs "
                    f"against {whole / 1000:,.1f} µs for the groups whole")


def _device_order(ctx: CutContext) -> list[str]:
    """The devices in the order parts try them: the one the cut is costed on, then the target's priority."""
    return list(dict.fromkeys([ctx.device, *ctx.target.priority, *ctx.target.devices]))


def _worth_spreading(ctx: CutContext, options: list[list[tuple[Axis, int]]], devices: list[str], whole: float,
                     extra: float = 0.0) -> tuple[float, tuple[tuple[Axis, int], ...], list[str]] | None:
    """The fastest of the cuts ``options`` whose tiles fit, spread over ``devices``, as (estimate + ``extra``,
    cuts, devices used); None unless it uses two devices and beats ``whole`` by ``NEAR_BEST`` (within an
    estimate's precision of the whole node, the parts' tasks are not worth it)."""
    scored = []
    for cuts in options:
        spread = _spread_estimate(ctx, cuts, devices) if fits(ctx, cuts) else None
        if spread is not None:
            scored.append((spread[0] + extra, tuple(cuts), spread[1]))
    best = min(scored, key=lambda s: (s[0], cut_count(s[1])), default=None)
    if best is None or best[0] >= whole * (1 - NEAR_BEST) or len(best[2]) < 2:
        return None
    return best


def _spread_estimate(ctx: CutContext, cuts: Sequence[tuple[Axis, int]],
                     devices: list[str]) -> tuple[float, list[str]] | None:
    """(estimated ns, devices used) of a cut's parts spread over ``devices``: each part, longest first, goes
    to the device that would finish it first; a part on an accelerator loads its slices and drains its output
    by DMA (its activation slices; weights are prefetched), on the CPU it reads DRAM in place; a part fits an
    accelerator when its working set is within the tile budget of that device's memory."""
    target, node = ctx.target, ctx.node
    parts: list[dict[str, float]] = []
    for tile, mult in representatives(ctx, cuts):
        s = sketch(node, tile)
        working_set = tile_bytes(ctx, tile)
        moved = [(s.outputs[0].nbytes, joined_in(ctx, node.outputs[0]))]
        moved += [(v.nbytes, joined_in(ctx, whole_value)) for v, entry in zip(s.inputs, tile.inputs)
                  if v is not None and entry is not None
                  and not (whole_value := source_value(node, tile, entry[0])).is_const]
        times = {}
        for d in devices:
            dev = target.devices[d]
            if dev.kind == "cpu":
                times[d] = target.cost(s, d)
            elif (kernel_support(target, s, d)
                  and working_set <= target.memories[dev.memory].size * ctx.fraction):
                times[d] = target.cost(s, d) + dma_by_source(ctx, moved, d)
        if not times:
            return None
        parts += [times] * mult
    finish = dict.fromkeys(devices, 0.0)
    for times in sorted(parts, key=lambda t: -min(t.values())):
        d = min(times, key=lambda d: (finish[d] + times[d], devices.index(d)))
        finish[d] += times[d]
    used = [d for d in devices if finish[d] > 0]
    return max(finish.values()) + (target.sync_ns if len(used) > 1 else 0.0), used
