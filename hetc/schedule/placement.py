"""Rows of ``placement.csv``: where each node runs and, when not on its fastest device, why."""
from __future__ import annotations

from typing import TYPE_CHECKING

from hetc.ir.fused import node_label
from hetc.ir.tiles import is_alias
from hetc.schedule.artifact import Schedule

if TYPE_CHECKING:
    from hetc.ir import Graph
    from hetc.target import Target


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB" if nbytes >= 10_000 else f"{nbytes} B"


def placement_rows(graph: Graph, target: Target, schedule: Schedule) -> list[dict]:
    """One dict per node: node, name, op, device, fastest, cost_us (on its device), fastest_cost_us, reason,
    refused ("device: reason; ..." for every device that cannot run it), tile ("3/12 rows x channels of conv1"
    for a tile, else "") and tiling (the tiler's rationale for that cut). Alias nodes (Region, Assemble) run
    nowhere and have no row."""
    rows = []
    strategy = schedule.stats.strategy
    for node in graph.topo_order():
        if is_alias(node):
            continue
        device = schedule.placement[node.id]
        refusals = {d: target.supports(node, d) for d in target.devices}
        refused = "; ".join(f"{d}: {why}" for d, why in refusals.items() if not why)
        costs = {d: target.cost(node, d) for d, why in refusals.items() if why}
        fastest = min(costs, key=lambda d: (costs[d], list(costs).index(d)))
        reason = ""
        if costs[fastest] < costs[device]:
            weights = sum(v.nbytes for v in node.present_inputs if v.is_const)
            inputs = sum(v.nbytes for v in node.present_inputs)
            ratio = costs[device] / costs[fastest]
            faster = f"{fastest} is {ratio:.1f}x faster" if ratio >= 1.1 else f"{fastest} is {ratio:.2f}x faster"
            if strategy == "greedy":
                reason = f"{faster}, but greedy takes the first device in priority order that supports the op"
            elif strategy.startswith("single:"):
                reason = f"{faster}, but strategy {strategy} puts every node on {device}"
            else:
                reason = (f"{faster}, but {strategy} placed it on {device}: on {fastest} it needs {_mb(inputs)} "
                          f"of inputs moved ({_mb(weights)} of them weights) and queues behind {fastest}'s other work")
        tile = node.tile   # a tile of a node the tiler cut: which piece, along what, and why that cut
        rows.append({"node": node.id, "name": node.name, "op": node_label(node), "device": device, "fastest": fastest,
                     "cost_us": round(costs[device] / 1000, 3), "fastest_cost_us": round(costs[fastest] / 1000, 3),
                     "reason": reason, "refused": refused,
                     "tile": f"{tile.index + 1}/{tile.count} {tile.axis} of {tile.of}" if tile is not None else "",
                     "tiling": tile.why if tile is not None else ""})
    return rows


class IdleAcceleratorsWarning(UserWarning):
    """A build whose accelerators got no work: legal, but rarely what the user meant."""


def idle_accelerators_warning(graph: Graph, target: Target, schedule: Schedule,
                              top: int = 3) -> str | None:
    """The warning for a build whose accelerators got no work (every node on the CPU devices), with the count
    and the commonest refusal reasons, quoted from capability; None when an accelerator has work, or the
    strategy itself chose the devices (``single:``)."""
    accelerators = [d.name for d in target.devices.values() if d.kind != "cpu"]
    if (not accelerators or not schedule.placement or schedule.stats.strategy.startswith("single:")
            or any(device in accelerators for device in schedule.placement.values())):
        return None
    groups: dict[tuple[str, str], list[str]] = {}   # (device, reason code) -> messages, in graph order
    capable = {d: 0 for d in accelerators}
    for node in graph.topo_order():
        if is_alias(node):
            continue
        for device in accelerators:
            why = target.supports(node, device)
            if why:
                capable[device] += 1
            else:
                groups.setdefault((device, why.code), []).append(str(why))
    n = len(schedule.placement)
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))[:top]
    reasons = "; ".join(f"{device} refused {len(msgs)} ({code}), e.g. \"{msgs[0]}\"" for (device, code), msgs in ranked)
    chosen = [f"{d} could run {c} but the scheduler found the CPU faster" for d, c in capable.items() if c]
    return (f"no work for the accelerators ({', '.join(accelerators)}) of target {target.name}: {n} of {n} nodes "
            f"run on the CPU. Top reasons: {reasons or 'none refused'}"
            + (f"; {', '.join(chosen)}" if chosen else "") + ". See placement.csv in the bundle for every node.")
