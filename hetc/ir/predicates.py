"""Predicated nodes: work that runs only when a router picks it (the experts of a mixture of experts).

A node whose ``when`` is set runs only when that value, its *gate*, has a nonzero element. The node reads the
gate like an input (it is copied into the node's memory first) and decides there, at run time. Two kinds:

* a *gated* node multiplies its whole result by the gate as its last step (``gating_operand``): when the gate
  is all zero its output is zero, so instead of computing it writes zeros (``zero_fills``);
* a node of a gated node's *cone* makes values that only the gated node and other cone nodes read: when the
  gate is all zero nobody needs them, and the node does nothing.

A copy into a memory is predicated on a gate when every node reading it there is (``shared_gate``): the DMA
reads the gate's copy in its destination memory and waits for it. The schedule keeps room and time for every
predicated task (its makespan is the worst case); the simulator skips what the gates turn off.

The one difference from onnxruntime's dense evaluation: an expert the router did not choose whose result
would have been inf or NaN contributes 0 here (onnxruntime computes ``inf x 0 = NaN``).
"""
from __future__ import annotations

from typing import Iterable, TypeVar

from hetc.ir.fused import base_input_count, epilogue_of, is_fused
from hetc.ir.graph import Node, Value

T = TypeVar("T")


def gating_operand(node: Node) -> Value | None:
    """The value ``node`` multiplies its whole result by as its last step: a Mul's operand of one element per
    row (a gate column), or the operand of a fused node's final ``Mul`` part; None otherwise."""
    if node.op_type == "Mul" and not node.domain and len(node.present_inputs) == 2:
        candidates = node.present_inputs
    elif is_fused(node) and epilogue_of(node) and epilogue_of(node)[-1].op == "Mul":
        parts = epilogue_of(node)
        count = base_input_count(len(node.inputs), parts)
        candidates = [node.inputs[count + sum(p.binary for p in parts) - 1]]
    else:
        return None
    out = node.outputs[0]
    for gate in candidates:
        if gate is not None and not gate.is_const and gate.numel < out.numel and not gate.is_host:
            return gate
    return None


def zero_fills(node: Node) -> bool:
    """Whether a predicated node writes zeros when its gate is off (a gated node, or a tile of one, which
    multiplies by its rows of the gate) rather than nothing."""
    return node.when is not None and gating_operand(node) is not None


def shared_gate(gates: Iterable[T | None], value: T) -> T | None:
    """The gate a copy of ``value`` is predicated on, given the gates of the nodes reading it at the copy's
    destination: their common gate when every one has the same, else None (a copy of the gate itself never
    is: it is what they read to decide)."""
    found: set = set(gates)
    if len(found) != 1:
        return None
    gate = found.pop()
    return None if gate is None or gate == value else gate


def skip_chance(gate: Value) -> float:
    """The probability that a whole batch leaves the expert of ``gate`` out, under uniform top-k routing by the
    ``TopK`` (or fused ``TopKGate``) that computes the gate: ``(1 - k / E) ** rows``, with E the size of its
    axis and ``rows`` the gate column's; the largest over several routers, and 0 when none computes it or its k
    is not a constant."""
    return max(((1.0 - k / experts) ** max(1, gate.numel) for _router, k, experts in routers(gate)), default=0.0)


def gate_routing(gates: Iterable[Value]) -> dict[str, tuple[int, int, int, int]]:
    """Per gate a router decides (``router_of``), by name: (that router's node id, k, experts, rows routed),
    which is what the runs to weigh are drawn from (hetc.schedule.expected.routing_choices)."""
    return {gate.name: (r[0].id, r[1], r[2], max(1, gate.numel)) for gate in gates
            for r in [router_of(gate)] if r is not None}


def router_of(gate: Value) -> tuple[Node, int, int] | None:
    """The router that decides ``gate`` (the one ``skip_chance`` judges by: the likeliest to leave it out) as
    (node, k, experts), or None."""
    found = list(routers(gate))
    return max(found, key=lambda r: (1.0 - r[1] / r[2], -r[0].id)) if found else None


def routers(gate: Value) -> Iterable[tuple[Node, int, int]]:
    """Every routing node ``gate`` is computed from that picks a constant k of more than k experts per row, as
    (node, k, experts)."""
    for router in ancestors(gate).values():
        k = _constant_k(router)
        if k is None or router.inputs[0] is None or not router.inputs[0].shape:
            continue
        experts = int(router.attrs["experts"]) if router.op_type == "TopKGate" else \
            router.inputs[0].shape[router.attr("axis", -1)]
        if experts > k:
            yield router, k, experts


def _constant_k(router: Node) -> int | None:
    """How many experts a routing node picks per row, when that is a constant."""
    if router.op_type == "TopKGate":
        return int(router.attrs["k"])
    k_input = router.inputs[1] if router.op_type == "TopK" and len(router.inputs) > 1 else None
    return int(k_input.const.reshape(-1)[0]) if k_input is not None and k_input.is_const else None


def ancestors(value: Value) -> dict[int, Node]:
    """The nodes ``value`` is computed from (its producer and theirs, transitively), by id."""
    found: dict[int, Node] = {}
    stack = [value]
    while stack:
        producer = stack.pop().producer
        if producer is not None and producer.id not in found:
            found[producer.id] = producer
            stack.extend(producer.reads)
    return found
