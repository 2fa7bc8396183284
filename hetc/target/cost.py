"""The roofline cost model: ``launch + max(flops / (peak[dtype] x efficiency[class]), bytes / bandwidth)``.

The work of a node (its operation count, bytes, class and compute dtype) does not depend on the device, so it
is computed once per node and cached; the per-device part is a few multiplications. The scheduler calls
``node_cost_ns`` for every (node, device) pair of graphs with thousands of nodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hetc.errors import TargetError
from hetc.ir import Node
from hetc.ir.fused import base_node
from hetc.target.capability import plain_convolutions
from hetc.target.flops import class_shares, node_bytes, node_flops
from hetc.target.model import Device
from hetc.target.ops import (INTEGER_MAC_OPS, SIGNED_TWIN, conv_groups, conv_weight_shape, is_view, op_class,
                            view_copy_reason)

if TYPE_CHECKING:
    from hetc.target.target import Target

__all__ = ["op_class", "node_class", "node_flops", "node_bytes", "node_work", "node_cost_ns", "compute_dtype",
           "peak_for", "efficiency_for", "NodeWork"]


@dataclass(frozen=True)
class NodeWork:
    """What a node costs independent of where it runs."""

    flops: int
    bytes: int
    op_class: str        # one of OP_CLASSES, or "depthwise" for a depthwise convolution
    dtype: str           # the element type its arithmetic runs in
    # A fused node's epilogue parts (and an Attention's softmax) as (op class, flops), included in ``flops``:
    # each runs at its own class's efficiency (a Clip after a depthwise Conv runs on the output pipeline, not
    # at the depthwise MAC rate; an Attention's exponentials on the vector unit, not the MAC array).
    epilogue: tuple[tuple[str, int], ...] = ()
    groups: int = 1      # of a grouped Conv (``ops.conv_groups``): a device may run it as that many kernels


# node.memo[_MEMO_KEY] = (signature it was computed for, work); the signature catches a node edited after it
# was costed.
_MEMO_KEY = "cost.work"


def _signature(node: Node) -> tuple:
    return (node.op_type, tuple(None if v is None else v.shape for v in node.inputs),
            tuple(v.shape for v in node.outputs), len(node.attrs))


def is_depthwise(node: Node) -> bool:
    """A convolution whose every group holds one input channel (MobileNet/ShuffleNet's depthwise layers)."""
    if node.op_type not in ("Conv", "QLinearConv", "ConvInteger") or int(node.attr("group", 1)) <= 1:
        return False
    w = conv_weight_shape(node)
    return len(w) >= 2 and w[1] == 1


def node_class(node: Node) -> str:
    """``op_class`` refined by the node: a depthwise Conv is "depthwise" (devices may price it apart)."""
    return "depthwise" if is_depthwise(node) else op_class(node.op_type)


def compute_dtype(node: Node) -> str:
    """The dtype a node computes in: its first output's, unless that is a boolean/index result of a
    comparison or an arg-reduction, or the node is an integer MAC op, in which case its first input's."""
    if node.op_type in INTEGER_MAC_OPS and node.inputs and node.inputs[0] is not None:
        return node.inputs[0].dtype  # the products' type, not the int32 accumulators' or the requantised output's
    out = node.outputs[0].dtype if node.outputs else "float32"
    if out in ("bool", "int64") and node.present_inputs:
        return node.present_inputs[0].dtype
    return out


def node_work(node: Node) -> NodeWork:
    """Flops, bytes, class and dtype of ``node``, cached per node."""
    signature = _signature(node)
    hit = node.memo.get(_MEMO_KEY)
    if hit is not None and hit[0] == signature:
        return hit[1]
    epilogue = tuple((_part_class(op), flops) for op, flops in class_shares(node))
    base = base_node(node)   # (a fused node is judged by its base op: a packed Conv's weight shape is its own)
    work = NodeWork(node_flops(node), node_bytes(node), node_class(base), compute_dtype(node), epilogue,
                    conv_groups(base))
    node.memo[_MEMO_KEY] = (signature, work)
    return work


def _part_class(op: str) -> str:
    """The class an epilogue part is priced in: its op's, and "activation" for the composite ones (SiLU)."""
    cls = op_class(op)
    return "activation" if cls == "other" else cls


def peak_for(device: Device, dtype: str) -> float:
    """Peak rate (ops per ns) of ``device`` in ``dtype`` (uint8 at the int8 rate when only that is listed); a
    dtype without an entry runs at the slowest listed rate (the CPU executes int64 or float64 arithmetic, but no preset claims a fast rate for it)."""
    rate = device.peak.get(dtype)
    if rate is None and dtype in SIGNED_TWIN:  # an unsigned type runs on the signed datapath of its width
        rate = device.peak.get(SIGNED_TWIN[dtype])
    return rate if rate is not None else min(device.peak.values())


def efficiency_for(device: Device, cls: str) -> float:
    """Fraction of peak ``device`` reaches on op class ``cls``: the class entry, else (for "depthwise") the
    "conv" entry, else "default", else the device's lowest efficiency (a class outside a device's op list,
    costed only so that every (node, device) pair has a finite price)."""
    table = device.efficiency
    if cls in table:
        return table[cls]
    if cls == "depthwise" and "conv" in table:
        return table["conv"]
    return table.get("default", min(table.values()))


def node_cost_ns(target: Target, node: Node, device: str) -> float:
    """Roofline duration in ns of ``node`` on ``device``. Defined for every node on every device (it does not
    check capability: ask ``Target.supports`` for that)."""
    dev = target.devices.get(device)
    if dev is None:
        raise TargetError(f"target '{target.name}' has no device '{device}'; its devices are: "
                          f"{', '.join(target.devices)}")
    if is_view(node):   # no kernel runs where the planner aliases its bytes; else a copy streams them
        bandwidth = target.memories[dev.memory].bandwidth
        return 0.0 if view_copy_reason(node) is None else dev.launch_ns + node_bytes(node) / bandwidth
    work = node_work(node)
    peak = peak_for(dev, work.dtype)
    base_flops = work.flops - sum(flops for _cls, flops in work.epilogue)
    compute_ns = base_flops / (peak * efficiency_for(dev, work.op_class)) + sum(
        flops / (peak * efficiency_for(dev, cls)) for cls, flops in work.epilogue)
    memory_ns = work.bytes / target.memories[dev.memory].bandwidth
    # A grouped Conv run as one plain convolution per group pays a launch per group; its groups are equal,
    # so the roofline of each is the node's divided by their count.
    return dev.launch_ns * plain_convolutions(work.groups, dev) + max(compute_ns, memory_ns)


def skipped_cost_ns(target: Target, node: Node, device: str, zero_fill: bool) -> float:
    """Duration of a predicated node whose gate is off (hetc.ir.predicates): its outputs' zeros written at the
    memory's bandwidth (``zero_fill``), or nothing. No launch: the command stream reads the gate and skips the
    kernel, and a fill is a store stream, not a kernel (as a DMA engine's memset)."""
    if not zero_fill:
        return 0.0
    dev = target.devices[device]
    return sum(v.nbytes for v in node.outputs) / target.memories[dev.memory].bandwidth
