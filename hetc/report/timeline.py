"""The Timeline: one chart-ready view of a run, planned (from a Schedule) or simulated (from a SimResult).

Every exporter (Perfetto JSON, HTML, PNG/SVG) and the utilisation table read a Timeline, never the stage
artifacts directly, so the planned and the simulated run look the same and can be compared side by side.
Times in a Timeline are microseconds (floats); the artifacts' integer nanoseconds are divided by 1000.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hetc.ir.fused import node_label
from hetc.report.opclass import op_class

if TYPE_CHECKING:
    from hetc.ir import Graph, Node, Value
    from hetc.memory.artifact import MemoryPlan
    from hetc.schedule.artifact import Schedule, Task
    from hetc.sim.result import SimEvent, SimResult
    from hetc.target.target import Target

GROUP_TITLES = {"compute": "Compute devices", "dma": "DMA engines"}
_KIND_ORDER = {"cpu": 0, "npu": 1, "dsp": 2}


@dataclass(frozen=True)
class Lane:
    """One serial engine: a device (group "compute") or a DMA engine (group "dma")."""

    engine: str
    group: str                  # "compute" | "dma"
    kind: str                   # "cpu" | "npu" | "dsp" | "dma" | "device" (kind unknown without a target)
    detail: str = ""            # home memory of a device, or the two memories a DMA engine links

    @property
    def label(self) -> str:
        return f"{self.engine} ({self.detail})" if self.detail else self.engine


@dataclass(frozen=True)
class Slice:
    """One task on one engine: [start_us, end_us)."""

    id: int
    engine: str
    name: str
    op_class: str
    start_us: float
    end_us: float
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def dur_us(self) -> float:
        return self.end_us - self.start_us

    def json_args(self) -> dict[str, Any]:
        """``args`` as plain JSON (tuples to lists, numpy scalars to numbers, anything else to text)."""
        return _json_safe(self.args)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)


@dataclass(frozen=True)
class NodeFacts:
    """What a chart says about one node: its name and op, its tensors (``name: dtype[shape]``) and bytes.
    Built from the graph at build time, or from a bundle's programs and memory plan by ``hetc gantt``."""

    id: int
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    bytes: int
    tile: str = ""   # "3/8 by rows of conv1" for a tile node: the chart groups a tiled node's bars by it

    @classmethod
    def of(cls, node: "Node") -> "NodeFacts":
        tile = "" if node.tile is None else (
            f"{node.tile.index + 1}/{node.tile.count} by {node.tile.axis} of {node.tile.of}")
        return cls(node.id, node.name or f"{node.op_type}#{node.id}", node.op_type,
                   tuple(_describe(v) for v in node.inputs), tuple(_describe(v) for v in node.outputs),
                   sum(v.nbytes for v in node.present_inputs) + sum(v.nbytes for v in node.outputs), tile)


@dataclass(frozen=True)
class Flow:
    """A semaphore dependency: slice ``src`` (on one engine) must end before slice ``dst`` (another) starts."""

    src: int
    dst: int
    label: str = ""


@dataclass(frozen=True)
class MemorySeries:
    """Bytes in use in one memory as a step function: ``points[i] = (time_us, bytes)`` holds until the next."""

    memory: str
    capacity_bytes: int         # 0 when unknown
    points: tuple[tuple[float, int], ...]
    peak_bytes: int | None = None          # highest address the plan uses (>= the live-bytes peak)
    lower_bound_bytes: int | None = None   # max over time of live bytes

    @property
    def max_bytes(self) -> int:
        return max((b for _, b in self.points), default=0)


@dataclass(frozen=True)
class Timeline:
    title: str
    source: str                 # "planned" | "simulated"
    lanes: tuple[Lane, ...]
    slices: tuple[Slice, ...]
    flows: tuple[Flow, ...] = ()
    memories: tuple[MemorySeries, ...] = ()
    makespan_us: float = 0.0
    planned_makespan_us: float | None = None
    lower_bound_us: float | None = None
    waiting_us: dict[str, float] = field(default_factory=dict)  # simulated: time each engine blocked on waits

    # ------------------------------------------------------------------ queries
    def lane_slices(self) -> dict[str, list[Slice]]:
        """Slices of every lane (idle lanes too), in start order."""
        by_lane: dict[str, list[Slice]] = {lane.engine: [] for lane in self.lanes}
        for s in self.slices:
            by_lane.setdefault(s.engine, []).append(s)
        for slices in by_lane.values():
            slices.sort(key=lambda s: (s.start_us, s.end_us, s.id))
        return by_lane

    def slice_by_id(self) -> dict[int, Slice]:
        return {s.id: s for s in self.slices}

    def busy_us(self) -> dict[str, float]:
        busy = {lane.engine: 0.0 for lane in self.lanes}
        for s in self.slices:
            busy[s.engine] = busy.get(s.engine, 0.0) + s.dur_us
        return busy

    def utilisation(self) -> dict[str, float]:
        """Busy fraction of the makespan per lane."""
        span = self.makespan_us or 1.0
        return {e: b / span for e, b in self.busy_us().items()}

    def op_classes(self) -> list[str]:
        """The op classes present, in the palette's order."""
        from hetc.report.opclass import CLASS_ORDER
        present = {s.op_class for s in self.slices}
        return [c for c in CLASS_ORDER if c in present] + sorted(present - set(CLASS_ORDER))

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_schedule(cls, schedule: "Schedule", graph: "Graph | None", plan: "MemoryPlan | None" = None,
                      target: "Target | None" = None, title: str | None = None,
                      nodes: "dict[int, NodeFacts] | None" = None) -> "Timeline":
        """The planned run. With a plan, ``schedule`` must be the plan's (the one the build ships; re-timed,
        spill-bearing) and occupancy comes from its buffers; flows are the dependencies that cross engines.
        Without the graph and without ``nodes`` (what a bundle says of them, see ``hetc.report.bundle_view``)
        slices are named by op and node id and carry no shapes."""
        sched = one_schedule(schedule, plan)
        if nodes is None:
            nodes = {n.id: NodeFacts.of(n) for n in graph.nodes} if graph is not None else {}
        spill_role = _spill_roles(plan)
        slices = tuple(_task_slice(t, nodes, spill_role.get(t.id)) for t in sched.tasks)
        engine_of = {t.id: t.engine for t in sched.tasks}
        flows = tuple(Flow(src=d, dst=t.id, label=f"{engine_of[d]} -> {t.engine}")
                      for t in sched.tasks for d in t.deps if d in engine_of and engine_of[d] != t.engine)
        memories = _plan_series(plan, target) if plan is not None else ()
        return cls(title=title or (graph.name if graph is not None else "schedule"), source="planned",
                   lanes=_lanes(sched.tasks, target), slices=slices, flows=flows, memories=memories,
                   makespan_us=sched.makespan_ns / 1000, planned_makespan_us=sched.makespan_ns / 1000,
                   lower_bound_us=sched.lower_bound_ns / 1000)

    @classmethod
    def from_simulation(cls, sim_result: "SimResult", schedule: "Schedule | None" = None,
                        plan: "MemoryPlan | None" = None, target: "Target | None" = None,
                        title: str = "simulation") -> "Timeline":
        """The simulated run: compute and DMA instructions become slices, ``sync_edges`` become flows
        (from the last task before the signal to the first task after the wait), occupancy is the
        simulator's ``memory_usage``. The schedule (the plan's, when a plan is given: that is the one the
        bundle was generated from) fills in planned start times and task details."""
        if schedule is None and plan is not None:
            schedule = plan.schedule   # the only schedule a plan has
        sched = one_schedule(schedule, plan) if schedule is not None else None
        tasks = {t.id: t for t in sched.tasks} if sched is not None else {}
        spill_role = _spill_roles(plan)
        work = [e for e in sim_result.events if e.kind in ("compute", "dma")]
        slices: list[Slice] = []
        index_of: dict[str, list[tuple[int, int]]] = {}    # engine -> sorted (program index, slice id)
        for sid, event in enumerate(sorted(work, key=lambda e: (e.engine, e.index))):
            task = tasks.get(event.task) if event.task is not None else None
            slices.append(_event_slice(sid, event, task, spill_role.get(event.task)))
            index_of.setdefault(event.engine, []).append((event.index, sid))
        flows = []
        for edge in sim_result.sync_edges:
            src = _task_at_or_before(index_of.get(edge.src_engine, []), edge.src_index)
            dst = _task_at_or_after(index_of.get(edge.dst_engine, []), edge.dst_index)
            if src is not None and dst is not None:
                flows.append(Flow(src=src, dst=dst, label=edge.semaphore))
        usage = {m: [(t / 1000, int(b)) for t, b in steps] for m, steps in sim_result.memory_usage.items()}
        memories = _series(usage, plan, target)
        lane_tasks = [(e.engine, "transfer" if e.kind == "dma" else "compute") for e in work]
        waiting: dict[str, float] = {}
        for e in sim_result.events:
            if e.kind == "wait":
                waiting[e.engine] = waiting.get(e.engine, 0.0) + (e.end_ns - e.start_ns) / 1000
        return cls(title=title, source="simulated", lanes=_lanes_of(lane_tasks, target), slices=tuple(slices),
                   flows=tuple(flows), memories=memories, makespan_us=sim_result.makespan_ns / 1000,
                   planned_makespan_us=sim_result.planned_makespan_ns / 1000,
                   lower_bound_us=sched.lower_bound_ns / 1000 if sched is not None else None,
                   waiting_us=waiting)


# ---------------------------------------------------------------------------------------------- slices
def _describe(v: "Value | None") -> str:
    return "-" if v is None else describe_tensor(v.name, v.dtype, v.shape, v.is_const)


def describe_tensor(name: str, dtype: str, shape: "tuple[int, ...] | list[int]", const: bool) -> str:
    """A tensor as a tooltip shows it: ``x: float32[1x3x32x32]``, `` (const)`` for a constant."""
    dims = "x".join(map(str, shape)) or "scalar"
    return f"{name}: {dtype}[{dims}]" + (" (const)" if const else "")


def _task_slice(t: "Task", nodes: "dict[int, NodeFacts]", spill: str | None = None) -> Slice:
    start, end = t.start_ns / 1000, t.end_ns / 1000
    if t.kind == "transfer":
        args: dict[str, Any] = {"task": t.id, "value": t.value, "src": t.src, "dst": t.dst, "bytes": t.bytes,
                                "planned_start_us": start}
        name = f"{t.value} {t.src}->{t.dst}"
        if spill is not None:  # spill traffic is the planner's doing, not the data flow's: say so
            args["spill"] = spill
            name = f"spill: {name}"
        return Slice(t.id, t.engine, name, "dma", start, end, args)
    node = nodes.get(t.node) if t.node is not None else None
    op = t.op or (node_label(node) if node is not None else None)
    args = {"task": t.id, "node": t.node, "op": op, "planned_start_us": start}
    name = f"{op or 'task'}#{t.node if t.node is not None else t.id}"
    if node is not None:
        name = node.name
        args["inputs"] = list(node.inputs)
        args["outputs"] = list(node.outputs)
        args["bytes"] = node.bytes
        if node.tile:
            args["tile"] = node.tile
    return Slice(t.id, t.engine, name, op_class(op), start, end, args)


def _spill_roles(plan: "MemoryPlan | None") -> dict[int, str]:
    """Task id -> "evict from <memory>" / "reload into <memory>" for the planner's spill transfers."""
    roles: dict[int, str] = {}
    for spill in (plan.spills if plan is not None else ()):
        roles[spill.evict_task] = f"evict from {spill.memory}"
        if spill.reload_task is not None:
            roles[spill.reload_task] = f"reload into {spill.memory}"
    return roles


def _event_slice(sid: int, event: "SimEvent", task: "Task | None", spill: str | None = None) -> Slice:
    """A simulated instruction; what the simulator did not record in ``args`` is filled in from its task."""
    args: dict[str, Any] = dict(event.args)
    args["simulated_start_us"] = event.start_ns / 1000
    planned = event.planned_start_ns if event.planned_start_ns is not None else (
        task.start_ns if task is not None else None)
    if planned is not None:
        args["planned_start_us"] = planned / 1000
    if event.task is not None:
        args["task"] = event.task
    if task is not None and task.kind == "compute":
        args.setdefault("node", task.node)
        args.setdefault("op", task.op)
    elif task is not None:
        args.setdefault("value", task.value)
        args.setdefault("bytes", task.bytes)
    name = event.name
    if spill is not None:  # spill traffic is the planner's doing, not the data flow's: say so
        args["spill"] = spill
        name = f"spill: {name}"
    cls = "dma" if event.kind == "dma" else op_class(args.get("op"))
    return Slice(sid, event.engine, name, cls, event.start_ns / 1000, event.end_ns / 1000, args)


def _task_at_or_before(entries: list[tuple[int, int]], index: int) -> int | None:
    pos = bisect.bisect_right(entries, (index, float("inf")))
    return entries[pos - 1][1] if pos > 0 else None


def _task_at_or_after(entries: list[tuple[int, int]], index: int) -> int | None:
    pos = bisect.bisect_left(entries, (index, -1))
    return entries[pos][1] if pos < len(entries) else None


# ---------------------------------------------------------------------------------------------- lanes
def _lanes(tasks: tuple["Task", ...], target: "Target | None") -> tuple[Lane, ...]:
    return _lanes_of([(t.engine, t.kind) for t in tasks], target)


def _lanes_of(engine_kinds: list[tuple[str, str]], target: "Target | None") -> tuple[Lane, ...]:
    """Every engine of the target (idle ones too: an idle NPU is information), then any engine the tasks
    name that the target does not; devices before DMA engines, devices by kind."""
    lanes: dict[str, Lane] = {}
    if target is not None:
        for d in target.devices.values():
            lanes[d.name] = Lane(d.name, "compute", d.kind, d.memory)
        for e in target.dmas.values():
            lanes[e.name] = Lane(e.name, "dma", "dma", f"{e.memories[0]}-{e.memories[1]}")
    for engine, kind in engine_kinds:
        if engine not in lanes:
            lanes[engine] = (Lane(engine, "dma", "dma") if kind == "transfer" else Lane(engine, "compute", "device"))
    position = {name: i for i, name in enumerate(lanes)}
    return tuple(sorted(lanes.values(), key=lambda lane: (lane.group != "compute", _KIND_ORDER.get(lane.kind, 9),
                                                          position[lane.engine])))


# ---------------------------------------------------------------------------------------------- memory
def _capacities(plan: "MemoryPlan | None", target: "Target | None") -> dict[str, int]:
    capacity = {m.name: m.size for m in target.memories.values()} if target is not None else {}
    if plan is not None:
        capacity.update({m: s.capacity_bytes for m, s in plan.stats.items()})
    return capacity


def _series(usage: dict[str, list[tuple[float, int]]], plan: "MemoryPlan | None",
            target: "Target | None") -> tuple[MemorySeries, ...]:
    """One series per memory the target or the plan knows (an unused scratchpad is information too, like an
    idle engine), scratchpads first and DRAM, the big one, last."""
    capacity = _capacities(plan, target)
    stats = plan.stats if plan is not None else {}
    names = set(usage) | set(capacity)
    dram = target.dram if target is not None else "dram"
    return tuple(
        MemorySeries(memory=m, capacity_bytes=capacity.get(m, 0), points=tuple(usage.get(m) or [(0.0, 0)]),
                     peak_bytes=stats[m].peak_bytes if m in stats else None,
                     lower_bound_bytes=stats[m].lower_bound_bytes if m in stats else None)
        for m in sorted(names, key=lambda m: (m == dram, m)))


def _plan_series(plan: "MemoryPlan", target: "Target | None") -> tuple[MemorySeries, ...]:
    """Live bytes per memory as the plan has them: each storage (a buffer and the aliases that share it:
    views, in-place writes, Concat inputs in their slices) counted once, at its owner's address range,
    live from its members' earliest start to their latest end, padded to the memory's alignment, which
    is how the planner's lower bound counts it, so the curve's peak is that bound."""
    storages: dict[tuple[str, str], list[int]] = {}     # (memory, owner id) -> [start, end, size]
    for b in plan.buffers:
        key = (b.memory, b.owner)
        span = storages.setdefault(key, [b.start_ns, b.end_ns, b.size])
        span[0], span[1], span[2] = min(span[0], b.start_ns), max(span[1], b.end_ns), max(span[2], b.size)
    alignment = {m.name: m.alignment for m in target.memories.values()} if target is not None else {}
    deltas: dict[str, dict[int, int]] = {m: {} for m in plan.stats}
    for (memory, _), (start, end, size) in storages.items():
        align = alignment.get(memory, 1)
        size = -(-size // align) * align
        d = deltas.setdefault(memory, {})
        d[start] = d.get(start, 0) + size
        d[end] = d.get(end, 0) - size
    usage = {}
    for memory, d in deltas.items():
        live, points = 0, [(0.0, 0)]
        for t in sorted(d):
            live += d[t]
            if t == 0:
                points[0] = (0.0, live)
            else:
                points.append((t / 1000, live))
        usage[memory] = points
    return _series(usage, plan, target)


def one_schedule(schedule: "Schedule", plan: "MemoryPlan | None") -> "Schedule":
    """``schedule``, checked to be the plan's when a plan is given: a build ships one schedule, the plan's
    (``BuildResult.schedule`` is ``plan.schedule``), and a report drawn from another would disagree with the
    bundle."""
    if plan is not None and plan.schedule is not schedule and plan.schedule.tasks != schedule.tasks:
        raise ValueError("the schedule is not the one the memory plan is valid for; pass plan.schedule (the "
                         "schedule the build emitted)")
    return schedule
