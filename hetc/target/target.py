"""The ``Target``: the whole chip, with the queries every later stage asks of it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hetc.ir import Node, Value
from hetc.target.model import DmaEngine, Device, Memory, Ok, Reason

# A joined value (an Assemble's output) may take at most this share of the staging memory (multi-npu's L2: 2
# of 8 MiB). The staging memory also holds the weights fanned out through it and the parts on their way, and
# the scheduler sees no capacity there: one joined value must leave room for the next while it is read.
JOIN_FRACTION = 0.25


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    memories: dict[str, Memory]
    devices: dict[str, Device]
    dmas: dict[str, DmaEngine]
    sync_ns: float                        # one cross-engine semaphore signal + wait
    priority: tuple[str, ...]             # device order the greedy (ONNX-Runtime-style) strategy tries
    dram: str = "dram"                    # where graph inputs, outputs and constants live
    source: str = ""                      # the TOML text it was loaded from (embedded in bundles)
    path: str = ""                        # where it was loaded from, for messages
    staging: str = ""                     # memory two-hop routes pass through ("": the DRAM)
    # Share of the staging memory one joined value may take (``join_memory``); hetc.planning sets 0, joining
    # in DRAM, where a plan overflows the staging memory. A compiler choice, not part of the chip's TOML.
    join_fraction: float = JOIN_FRACTION
    _cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False, hash=False)

    # ------------------------------------------------------------------ structure
    @property
    def engines(self) -> list[str]:
        """Every serial engine: devices first, then DMA engines (the order programs are listed in)."""
        return list(self.devices) + list(self.dmas)

    def home(self, device: str) -> str:
        return self.devices[device].memory

    def engines_between(self, a: str, b: str) -> list[DmaEngine]:
        """DMA engines that directly connect memories ``a`` and ``b`` (either direction)."""
        key = ("engines", a, b)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = [e for e in self.dmas.values() if e.serves(a, b)]
        return list(found)

    def route(self, src: str, dst: str) -> list[tuple[str, str]]:
        """The memory hops a value takes from ``src`` to ``dst``: direct when an engine links them,
        otherwise through the staging memory (``staging``, by default the DRAM), otherwise through DRAM.
        Empty when ``src == dst``."""
        key = ("route", src, dst)
        if key not in self._cache:
            self._cache[key] = self._find_route(src, dst)
        return list(self._cache[key])

    def _find_route(self, src: str, dst: str) -> list[tuple[str, str]]:
        if src == dst:
            return []
        if self.engines_between(src, dst):
            return [(src, dst)]
        for via in dict.fromkeys([self.staging or self.dram, self.dram]):
            if via not in (src, dst) and self.engines_between(src, via) and self.engines_between(via, dst):
                return [(src, via), (via, dst)]
        from hetc.errors import TargetError
        a, b = (src, self.dram) if not self.engines_between(src, self.dram) else (self.dram, dst)
        raise TargetError(f"target '{self.name}': no DMA engine connects memory '{a}' to '{b}'; "
                          f"add a [[dma]] entry with memories = [\"{a}\", \"{b}\"]")

    def join_memory(self, nbytes: int, graph_output: bool = False) -> str:
        """Where the parts of a tiled or split value are joined (an Assemble's output, hetc.ir.tiles): the
        staging memory when the target has one apart from DRAM (an on-chip L2 the cores share) that a DMA
        engine links to DRAM and to every device's home, unless the value is a graph output (it must end in
        DRAM) or takes more than ``join_fraction`` of it; else DRAM. In the L2 each core's part crosses the
        core's on-chip port, not its DRAM port, and DRAM's bandwidth is left to the weights."""
        staging = self._join_staging()
        if staging is None or graph_output or nbytes > self.join_fraction * self.memories[staging].size:
            return self.dram
        return staging

    def joins_on_chip(self, value: Value) -> bool:
        """Whether ``value``, joined from parts (an Assemble's output), lives on chip: ``join_memory`` is not
        DRAM. ``hetc.passes.alias_ops`` asks it of a Concat that would write its inputs in place."""
        return self.join_memory(value.nbytes) != self.dram

    def joining_in_dram(self) -> "Target":
        """This target with every joined value in DRAM (``join_fraction`` 0)."""
        return replace(self, join_fraction=0.0, _cache={})

    def spill_memory(self, memory: str, nbytes: int) -> str:
        """Where a buffer of ``nbytes`` evicted from ``memory`` waits for its next use (hetc.memory.spill): where
        values are joined (``join_memory``: an on-chip L2 the cores share, whose port is 4x a core's DRAM port on
        `multi-npu` and leaves DRAM's bandwidth to the weights), unless that is ``memory`` itself; else DRAM."""
        joined = self.join_memory(nbytes)
        return self.dram if joined == memory else joined

    def _join_staging(self) -> str | None:
        """The staging memory when it is not the DRAM and a DMA engine links it to DRAM and to every device's
        home (parts reach it and the joined value leaves it in one hop), else None. Cached: the tiler asks
        for every tile it costs."""
        if "join_staging" not in self._cache:
            staging = self.staging if self.staging and self.staging != self.dram else None
            homes = {d.memory for d in self.devices.values()} | {self.dram}
            linked = staging is not None and all(self.engines_between(staging, m) for m in homes if m != staging)
            self._cache["join_staging"] = staging if linked else None
        return self._cache["join_staging"]

    def transfer_ns(self, nbytes: int, engine: str) -> float:
        """Duration of one DMA transfer of ``nbytes`` on ``engine`` (latency + bytes / bandwidth)."""
        e = self.dmas[engine]
        return e.latency_ns + nbytes / e.bandwidth

    # ------------------------------------------------------------------ capability and cost
    def supports(self, node: Node, device: str) -> Ok | Reason:
        """Ok, or the Reason this device cannot run this node."""
        from hetc.target.capability import supports
        return supports(self, node, device)

    def candidates(self, node: Node) -> list[str]:
        """Devices that can run ``node``, in priority order."""
        order = list(self.priority) + [d for d in self.devices if d not in self.priority]
        return [d for d in order if self.supports(node, d)]

    def cost(self, node: Node, device: str) -> float:
        """Roofline duration in ns: launch + max(flops / (peak x efficiency), bytes / bandwidth)."""
        from hetc.target.cost import node_cost_ns
        return node_cost_ns(self, node, device)
