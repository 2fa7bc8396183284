"""The scheduling problem as plain numbers, detached from the IR and the target.

Every algorithm (HEFT, greedy, CP-SAT, the lower bound) works on a ``SchedulingProblem``; only
``build_problem`` knows about ``Graph`` and ``Target``. Tests build problems directly.

Nodes are indexed 0..n-1 in a topological order; values are indexed too. A value with no producer (a graph
input or a constant) starts in DRAM. All durations are integer nanoseconds (rounded up, so a schedule timed
with them is never optimistic).

Alias nodes (``hetc.ir.tiles``: Region, Assemble) keep their index but are flagged in ``alias_ops``: they have
no candidate device and no duration, and are never placed. What their outputs mean for tasks is stated once,
in ``hetc.schedule.tasks``; this module only records the structure (which value is a Region of which).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable

from hetc.errors import ScheduleError
from hetc.ir.fused import node_label
from hetc.ir.immediates import is_immediate
from hetc.ir.predicates import gate_routing
from hetc.ir.tiles import ASSEMBLE, REGION, is_alias
from hetc.target.flops import node_bytes

if TYPE_CHECKING:
    from hetc.ir import Graph, Node, Value
    from hetc.target import Target

Hop = tuple[str, str]


@dataclass(frozen=True)
class ValueSpec:
    name: str
    nbytes: int
    producer: int | None            # node index; None: graph input or constant, resident in DRAM from t=0
    consumers: tuple[int, ...]      # node indices, ascending, no repeats
    is_output: bool = False         # must end in DRAM
    is_const: bool = False
    is_host: bool = False           # held in the host CPU's heap: no memory, never copied (hetc.ir.host)


@dataclass(frozen=True)
class DmaSpec:
    name: str
    memories: tuple[str, str]
    latency_ns: float
    bandwidth: float                # bytes per ns


@dataclass(frozen=True)
class SchedulingProblem:
    node_ids: tuple[int, ...]                   # graph node id per index
    node_names: tuple[str, ...]
    ops: tuple[str, ...]
    durations: tuple[dict[str, int], ...]       # per node: candidate device -> ns, in priority order
    node_inputs: tuple[tuple[int, ...], ...]    # value indices each node reads (no repeats)
    values: tuple[ValueSpec, ...]
    device_memory: dict[str, str]               # device -> home memory
    dmas: dict[str, DmaSpec]
    sync_ns: int
    priority: tuple[str, ...]
    dram: str = "dram"
    routes: dict[tuple[str, str], tuple[Hop, ...]] = field(default_factory=dict)  # from Target.route
    staging: str | None = None                  # Target.staging when it is not the DRAM (copy_sources)
    alias_ops: dict[int, str] = field(default_factory=dict)  # alias node index -> "Region" | "Assemble"
    assembly: dict[int, str] = field(default_factory=dict)   # Assemble index -> its output's memory (else DRAM)
    capacity: dict[str, int] = field(default_factory=dict)   # device memory -> bytes (no entry: unbounded lead)
    dram_bandwidth: float | None = None         # bytes per ns all DRAM users share (None: unlimited)
    onchip_bytes: int | None = None             # every memory but DRAM together (None: not known)
    # per node, the bytes its compute reads and writes in its device's home memory (hetc.target.node_bytes: a
    # view's none, a Gather's kept rows); empty in a hand-built problem: every operand's bytes
    streamed_bytes: tuple[int, ...] = ()
    gates: dict[int, int] = field(default_factory=dict)      # predicated node -> its gate (hetc.ir.predicates)
    # gate -> (the node id of the router deciding it, its k, its number of experts, the rows it routes: each
    # picks k): hetc.schedule.expected
    gate_routers: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    _memo: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    # ------------------------------------------------------------------ structure
    @property
    def n(self) -> int:
        return len(self.node_ids)

    @property
    def devices(self) -> list[str]:
        return list(self.device_memory)

    def home(self, device: str) -> str:
        return self.device_memory[device]

    def candidates(self, node: int) -> list[str]:
        return list(self.durations[node])

    def fastest(self, node: int) -> int:
        """The node's shortest duration; 0 for an alias node (it is no work)."""
        return min(self.durations[node].values(), default=0)

    def is_alias(self, node: int) -> bool:
        return node in self.alias_ops

    @cached_property
    def compute_nodes(self) -> tuple[int, ...]:
        """The nodes that are tasks (every node but the alias nodes), in index order."""
        return tuple(i for i in range(self.n) if i not in self.alias_ops)

    @cached_property
    def region_root(self) -> tuple[int, ...]:
        """Per value, the value it is a Region of, followed through chains of Regions (itself when it is not
        a Region's output). The root's producer is a compute node, an Assemble, or none (DRAM from t=0)."""
        root = list(range(len(self.values)))
        for node in range(self.n):  # topological: a Region's input is rooted before its output
            if self.alias_ops.get(node) == REGION:
                for out in self.node_outputs[node]:
                    root[out] = root[self.node_inputs[node][0]]
        return tuple(root)

    @cached_property
    def region_closure(self) -> tuple[tuple[int, ...], ...]:
        """Per value, itself and every value rooted at it by Regions: they are available in the same memory
        at the same time."""
        closure: list[list[int]] = [[v] for v in range(len(self.values))]
        for value, root in enumerate(self.region_root):
            if root != value:
                closure[root].append(value)
        return tuple(tuple(c) for c in closure)

    def assembly_memory(self, node: int) -> str:
        """The memory an Assemble's output lives in (``assembly_memories`` decides it)."""
        return self.assembly.get(node, self.dram)

    @cached_property
    def assembled(self) -> dict[int, str]:
        """Values some Assemble writes in place into its output (its parts), with the memory of that output."""
        return {v: self.assembly_memory(node) for node, op in self.alias_ops.items() if op == ASSEMBLE
                for v in self.node_inputs[node]}

    @cached_property
    def compute_consumers(self) -> tuple[tuple[int, ...], ...]:
        """Per value, the consumers that are tasks (alias consumers read nothing themselves)."""
        return tuple(tuple(c for c in v.consumers if c not in self.alias_ops) for v in self.values)

    @cached_property
    def compute_predecessors(self) -> tuple[tuple[int, ...], ...]:
        """Per node, the compute nodes whose outputs it reads, looking through alias nodes."""
        found: list[tuple[int, ...]] = []
        for node in range(self.n):
            preds: dict[int, None] = {}
            for p in self.predecessors[node]:
                preds.update(dict.fromkeys(found[p] if p in self.alias_ops else (p,)))
            found.append(tuple(preds))
        return tuple(found)

    @cached_property
    def successors(self) -> tuple[tuple[int, ...], ...]:
        succ: list[set[int]] = [set() for _ in range(self.n)]
        for v in self.values:
            if v.producer is not None:
                succ[v.producer].update(v.consumers)
        return tuple(tuple(sorted(s)) for s in succ)

    @cached_property
    def predecessors(self) -> tuple[tuple[int, ...], ...]:
        pred: list[set[int]] = [set() for _ in range(self.n)]
        for i, s in enumerate(self.successors):
            for j in s:
                pred[j].add(i)
        return tuple(tuple(sorted(p)) for p in pred)

    @cached_property
    def node_outputs(self) -> tuple[tuple[int, ...], ...]:
        outs: list[list[int]] = [[] for _ in range(self.n)]
        for k, v in enumerate(self.values):
            if v.producer is not None:
                outs[v.producer].append(k)
        return tuple(tuple(o) for o in outs)

    def engines_between(self, a: str, b: str) -> list[str]:
        key = ("between", a, b)
        if key not in self._memo:
            self._memo[key] = sorted(e.name for e in self.dmas.values() if set(e.memories) == {a, b})
        return self._memo[key]

    def route(self, src: str, dst: str) -> list[Hop]:
        """The target's route; without one recorded: direct when an engine links the memories, otherwise
        through DRAM."""
        if src == dst:
            return []
        if (src, dst) in self.routes:
            return list(self.routes[(src, dst)])
        if self.engines_between(src, dst):
            return [(src, dst)]
        hops = [(src, self.dram), (self.dram, dst)]
        for a, b in hops:
            if not self.engines_between(a, b):
                raise ScheduleError(f"no DMA engine connects memory '{a}' to '{b}'; add one to the target")
        return hops

    def copy_source(self, origin: str, dst: str) -> str:
        """The memory a copy in ``dst`` is made from by default when the value originates in ``origin``: the
        last hop of the route."""
        return self.route(origin, dst)[-1][0]

    def copy_sources(self, value: int, origin: str, dst: str) -> list[str]:
        """The memories a copy of ``value`` in ``dst`` may be made from, the default first. A value born in
        DRAM (a weight, a graph input) that several tasks read may also come from the staging memory when an
        engine links it to ``dst``: cores that read the same bytes then fetch them from DRAM once, into the
        staging memory, and fan them out on chip (one DRAM read instead of one per core). A value one task
        reads gains nothing there but a detour through the staging memory's capacity. Which source a copy uses
        is its DMA engine's choice."""
        default = self.copy_source(origin, dst)
        staged = self.staging
        if (origin == self.dram and staged is not None and staged not in (dst, default)
                and len(self.compute_consumers[value]) > 1
                and self.engines_between(origin, staged) and self.engines_between(staged, dst)):
            return [default, staged]
        return [default]

    def source_by(self, value: int, origin: str, dst: str, engine: str | None) -> str:
        """The memory the copy of ``value`` in ``dst`` made by ``engine`` reads (the default source when
        ``engine`` is None)."""
        sources = self.copy_sources(value, origin, dst)
        if engine is None:
            return sources[0]
        for src in sources:
            if engine in self.engines_between(src, dst):
                return src
        raise ScheduleError(f"DMA engine '{engine}' cannot copy into '{dst}' a value born in '{origin}'")

    def transfer_ns(self, value: int, engine: str) -> int:
        e = self.dmas[engine]
        return math.ceil(e.latency_ns + self.values[value].nbytes / e.bandwidth)


def build_problem(graph: Graph, target: Target,
                  durations_of: Callable[[Node], dict[str, int]] | None = None) -> SchedulingProblem:
    """Durations, data edges and transfer costs of ``graph`` on ``target``; ``durations_of(node)`` replaces
    the candidates and the cost model ({device: ns}) when given (a placement decided elsewhere).

    Raises ScheduleError when a node has no device that can run it, naming each device's reason."""
    nodes = graph.topo_order()
    index = {n.id: i for i, n in enumerate(nodes)}
    durations: list[dict[str, int]] = []
    for node in nodes:
        if is_alias(node):  # not a task: no device, no duration
            durations.append({})
            continue
        if durations_of is not None:
            durations.append({d: max(1, int(ns)) for d, ns in durations_of(node).items()})
            continue
        cands = target.candidates(node)
        if not cands:
            reasons = "; ".join(f"{d}: {target.supports(node, d)}" for d in target.devices)
            raise ScheduleError(f"node '{node.name or node.id}' ({node.op_type}) cannot run on any device of "
                                f"target '{target.name}' ({reasons}); let the CPU run every op or change the model")
        durations.append({d: max(1, math.ceil(target.cost(node, d))) for d in cands})

    output_names = {v.name for v in graph.outputs}
    value_index: dict[str, int] = {}
    values: list[ValueSpec] = []

    def value_of(v: Value) -> int:
        if v.name not in value_index:
            producer = index[v.producer.id] if v.producer is not None and v.producer.id in index else None
            consumers = tuple(sorted({index[c.id] for c in v.consumers if c.id in index}))
            value_index[v.name] = len(values)
            values.append(ValueSpec(v.name, v.nbytes, producer, consumers, v.name in output_names, v.is_const,
                                    v.is_host))
        return value_index[v.name]

    # an immediate (hetc.ir.immediates) rides in the instruction: no input to bring, no transfer
    node_inputs = [tuple(dict.fromkeys(value_of(v) for v in n.reads if not is_immediate(v))) for n in nodes]
    for v in graph.outputs:
        value_of(v)
    gates = {n.when.name: n.when for n in nodes if n.when is not None}   # each once: an expert has several nodes
    memories = sorted({dev.memory for dev in target.devices.values()} | {target.dram})
    routes = {(a, b): tuple(target.route(a, b)) for a in memories for b in memories if a != b}
    dmas = {e.name: DmaSpec(e.name, tuple(e.memories), e.latency_ns, e.bandwidth) for e in target.dmas.values()}
    return SchedulingProblem(
        node_ids=tuple(n.id for n in nodes), node_names=tuple(n.name or f"{n.op_type}_{n.id}" for n in nodes),
        ops=tuple(node_label(n) for n in nodes), durations=tuple(durations), node_inputs=tuple(node_inputs),
        values=tuple(values), device_memory={d: dev.memory for d, dev in target.devices.items()}, dmas=dmas,
        sync_ns=math.ceil(target.sync_ns), priority=tuple(target.priority), dram=target.dram, routes=routes,
        staging=target.staging if target.staging and target.staging != target.dram else None,
        alias_ops={i: n.op_type for i, n in enumerate(nodes) if is_alias(n)},
        streamed_bytes=tuple(0 if is_alias(n) else node_bytes(n) for n in nodes),
        assembly={index[n]: m for n, m in assembly_memories(nodes, target, output_names).items()},
        gates={i: value_index[n.when.name] for i, n in enumerate(nodes) if n.when is not None},
        gate_routers={value_index[name]: routed for name, routed in gate_routing(gates.values()).items()},
        capacity={dev.memory: target.memories[dev.memory].size for dev in target.devices.values()
                  if dev.memory != target.dram},
        dram_bandwidth=float(target.memories[target.dram].bandwidth),
        onchip_bytes=sum(m.size for name, m in target.memories.items() if name != target.dram))


def assembly_memories(nodes: list[Node], target: Target, outputs: set[str]) -> dict[int, str]:
    """Per Assemble node id, the memory its output lives in: ``Target.join_memory`` (the shared L2 of a target
    staging through one, else DRAM), except that an Assemble nested in another (a cut along two axes) writes
    into the outer one's bytes and so follows it."""
    found: dict[int, str] = {}
    for node in reversed(nodes):                 # an outer Assemble before the Assembles it joins
        if not (is_alias(node) and node.op_type == ASSEMBLE):
            continue
        out = node.outputs[0]
        outer = next((c for c in out.consumers if is_alias(c) and c.op_type == ASSEMBLE), None)
        if outer is not None and outer.id in found:
            found[node.id] = found[outer.id]
        else:
            found[node.id] = target.join_memory(out.nbytes, out.name in outputs)
    return found
