"""Buffers and their lifetimes, derived from a schedule.

Every task of the schedule is bound to the buffers it touches: a compute task reads its node's inputs (and,
predicated, its gate after them) from and writes its outputs to its device's home memory; a transfer reads the
value's buffer in ``src`` (and, predicated, its gate's in ``dst``) and writes the one in ``dst``. A buffer
lives from the start of its writer to the end of its last reader (transfers count); graph inputs live from 0,
graph outputs (their DRAM copy) until the makespan, constants for the whole run in DRAM's read-only region.

Alias nodes (hetc.ir.tiles: Region, Assemble) are not tasks. The output of one gets a buffer in the memory the
schedule puts it in (``Schedule.aliases``) that no task writes: it is *made by* other buffers (a Region's by
its base there, an Assemble's by its parts' buffers in its memory, DRAM or the staging L2) and lives from when
they start. The table records these facts (``made_by``, ``region_of``, ``region_starts``); hetc.memory.aliasing
turns them into storage. A part that is a graph input lies in the output's bytes too: the caller writes it
there (a KV cache's past rows).

The ``BufferTable`` is the planner's mutable working state: spilling adds buffers and rebinds readers, so it
is kept apart from the schedule, whose times alone decide the intervals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hetc.errors import MemoryPlanError
from hetc.ir import Graph, Node, Value
from hetc.ir.tiles import REGION, assemble_starts, is_alias, region_bounds
from hetc.ir.immediates import is_immediate
from hetc.memory.artifact import host_ref, immediate_ref
from hetc.schedule.artifact import Schedule, Task
from hetc.target.target import Target


@dataclass
class BufferSpec:
    id: str
    value: str
    memory: str
    size: int
    dtype: str
    shape: tuple[int, ...]
    kind: str                       # "input" | "output" | "constant" | "activation" | "copy"
    writer: int | None              # task id; None for graph inputs and constants (ready at time 0)
    readers: list[int] = field(default_factory=list)
    from_zero: bool = False         # written by the caller before the run
    to_end: bool = False            # read by the caller after the run
    made_by: tuple[str, ...] = ()   # an alias output: the buffers whose availability makes it available
    region_of: str | None = None    # lies in this buffer's bytes (a Region's base; an Assemble part's output)
    region_starts: tuple[int, ...] | None = None   # ... from this element on (full rank)


@dataclass
class BufferTable:
    buffers: dict[str, BufferSpec]
    reads: dict[int, list[str | None]]   # task id -> buffer ids, in node input order
    writes: dict[int, list[str]]         # task id -> buffer ids, in node output order
    # Per memory, the bytes the buffers of predicated tasks may hold apart from one another (``_apart``)
    apart_budget: dict[str, int] = field(default_factory=dict)

    def lifetime(self, buffer_id: str, tasks: dict[int, Task], makespan: int) -> tuple[int, int]:
        """``[start, end)`` in ns; never empty (a buffer nobody reads still exists while it is written)."""
        b = self.buffers[buffer_id]
        if b.made_by:
            start = min(self.lifetime(m, tasks, makespan)[0] for m in b.made_by)
        else:
            start = 0 if b.from_zero or b.writer is None else tasks[b.writer].start_ns
        ends = [tasks[t].end_ns for t in ([b.writer] if b.writer is not None else []) + b.readers]
        end = makespan if b.to_end or b.kind == "constant" else max(ends, default=start)
        return start, max(end, start + 1)

    def lifetimes(self, schedule: Schedule, memory: str | None = None) -> dict[str, tuple[int, int]]:
        """Every buffer's ``lifetime``, or only those in ``memory``; inlined, as the planner calls this after
        every repair. (What makes an alias output lies in its memory: a Region's base, an Assemble's parts.)"""
        tasks = schedule.by_id()
        makespan = max(schedule.makespan_ns, 1)
        out: dict[str, tuple[int, int]] = {}
        for bid, b in self.buffers.items():   # (insertion order: what makes an alias output comes first)
            if memory is not None and b.memory != memory:
                continue
            if b.made_by:
                start = min(out[m][0] for m in b.made_by)
            else:
                start = 0 if b.from_zero or b.writer is None else tasks[b.writer].start_ns
            if b.to_end or b.kind == "constant":
                end = makespan
            else:
                end = max((tasks[r].end_ns for r in b.readers), default=start)
                if b.writer is not None:
                    end = max(end, tasks[b.writer].end_ns)
            out[bid] = (start, max(end, start + 1))
        self._apart(out, schedule)
        return out

    def _apart(self, out: dict[str, tuple[int, int]], schedule: Schedule) -> None:
        """Keep the bytes of different experts apart: in each memory, the buffers that predicated tasks
        (hetc.ir.predicates) write live through the whole stretch those buffers span, so none reuses
        another's bytes. Reuse would make an expert's task wait for the one whose bytes it takes, and a skipped
        expert then waits for a chosen one's real work, holding its engine. Only where they fit in
        ``apart_budget`` (half the memory): beyond, the bytes are worth more than the coupling costs."""
        gated = {t.id for t in schedule.tasks if t.when is not None}
        if not gated:
            return
        groups: dict[str, list[str]] = {}
        for bid in out:
            b = self.buffers[bid]
            if b.writer in gated and not b.made_by:
                groups.setdefault(b.memory, []).append(bid)
        for memory, bids in groups.items():
            if sum(self.buffers[b].size for b in bids) > self.apart_budget.get(memory, 0):
                continue
            lo, hi = min(out[b][0] for b in bids), max(out[b][1] for b in bids)
            for b in bids:
                out[b] = (lo, hi)

    def makers(self, buffer_id: str) -> tuple[int, ...]:
        """The tasks whose end makes the buffer's value available: its writer, or for an alias output those of
        the buffers that make it (none: available at time 0)."""
        b = self.buffers[buffer_id]
        if b.writer is not None:
            return (b.writer,)
        return tuple(sorted({t for m in b.made_by for t in self.makers(m)}))

    def add_reader(self, buffer_id: str, task_id: int) -> None:
        readers = self.buffers[buffer_id].readers
        if task_id not in readers:
            readers.append(task_id)


def buffer_id(value: str, memory: str) -> str:
    return f"{value}@{memory}"


def build_table(graph: Graph, schedule: Schedule, target: Target) -> BufferTable:
    """One buffer per value per memory it is written to, every task bound to its operands."""
    dram = target.dram
    outputs = {v.name for v in graph.outputs}
    buffers: dict[str, BufferSpec] = {}

    def add(v: Value, memory: str, kind: str, writer: int | None) -> str:
        if v.host is not None:
            return host_ref(v.name)   # held in the host's heap: no buffer
        bid = buffer_id(v.name, memory)
        if bid in buffers:
            raise MemoryPlanError(
                f"value '{v.name}' is written to memory '{memory}' twice (tasks {buffers[bid].writer} and "
                f"{writer}); the schedule must bring each value into a memory once")
        pinned_out = v.name in outputs and memory == dram
        buffers[bid] = BufferSpec(bid, v.name, memory, v.nbytes, v.dtype, tuple(v.shape),
                                  kind, writer, from_zero=writer is None, to_end=pinned_out)
        return bid

    for v in graph.inputs:
        if not v.is_const and v.host is None:
            add(v, dram, "input", None)
    for v in graph.constants:
        if not is_immediate(v) or v.name in outputs:
            add(v, dram, "constant", None)
    for v in graph.outputs:
        if v.is_const and buffer_id(v.name, dram) not in buffers:
            add(v, dram, "constant", None)

    nodes = graph.node_map()
    writes: dict[int, list[str]] = {}
    for task in schedule.tasks:
        if task.kind == "compute":
            node = _node_of(task, nodes)
            memory = target.home(task.engine)
            writes[task.id] = [add(v, memory, "output" if v.name in outputs and memory == dram else "activation",
                                   task.id) for v in node.outputs]
        else:
            v = graph.values.get(task.value or "")
            if v is None:
                raise MemoryPlanError(f"transfer task {task.id} moves unknown value '{task.value}'")
            kind = "output" if v.name in outputs and task.dst == dram else "copy"
            writes[task.id] = [add(v, task.dst or "", kind, task.id)]

    _add_alias_outputs(graph, schedule, target, buffers)

    reads: dict[int, list[str | None]] = {}
    for task in schedule.tasks:
        if task.kind == "compute":
            memory = target.home(task.engine)
            node = _node_of(task, nodes)
            names = [(v.name if v is not None else None, memory) for v in node.inputs]
            if node.when is not None:
                names.append((node.when.name, memory))   # read after the inputs to decide (hetc.ir.predicates)
        else:
            names = [(task.value, task.src or "")]
            if task.when is not None:   # a predicated copy reads its gate where it writes (tasks.copy_gate)
                names.append((task.when, task.dst or ""))
        bound: list[str | None] = []
        for name, memory in names:
            if name is None:
                bound.append(None)
                continue
            if graph.values[name].host is not None:
                bound.append(host_ref(name))
                continue
            if task.kind == "compute" and is_immediate(graph.values[name]):
                bound.append(immediate_ref(name))
                continue
            bid = buffer_id(name, memory)
            if bid not in buffers:
                raise MemoryPlanError(
                    f"task {task.id} ({_describe(task)}) reads '{name}' in memory '{memory}' but no task brings "
                    f"it there; the schedule is missing a transfer")
            if task.id not in buffers[bid].readers:   # Add(x, x) reads one buffer twice
                buffers[bid].readers.append(task.id)
            bound.append(bid)
        reads[task.id] = bound

    for name in outputs:
        if buffer_id(name, dram) not in buffers and graph.values[name].host is None:
            raise MemoryPlanError(f"graph output '{name}' never reaches '{dram}'; the schedule must end it "
                                  f"with a transfer to DRAM")
    return BufferTable(buffers, reads, writes, {name: m.size // 2 for name, m in target.memories.items()})


def _add_alias_outputs(graph: Graph, schedule: Schedule, target: Target, buffers: dict[str, BufferSpec]) -> None:
    """A buffer for each alias node's output in the memory the schedule gives it, made by its base (Region)
    or parts (Assemble); each Assemble part's DRAM buffer is recorded as lying in the output's bytes."""
    outputs = {v.name for v in graph.outputs}
    for node in graph.topo_order():
        if not is_alias(node):
            continue
        memory = schedule.aliases.get(node.id)
        if memory is None:
            raise MemoryPlanError(f"alias node {node.id} ('{node.name}', {node.op_type}) has no memory in the "
                                  f"schedule (Schedule.aliases); schedule the tiled graph again")
        out = node.outputs[0]
        bid = buffer_id(out.name, memory)
        if bid in buffers:
            raise MemoryPlanError(f"value '{out.name}' of alias node '{node.name}' is also written to '{memory}' "
                                  f"by task {buffers[bid].writer}; an alias output is made by its inputs only")
        if node.op_type == REGION:
            base = _alias_input(node, 0, memory, buffers)
            made_by: tuple[str, ...] = (base,)
            starts, _ = region_bounds(node)
            buffers[bid] = BufferSpec(bid, out.name, memory, out.nbytes, out.dtype, tuple(out.shape), "activation",
                                      None, made_by=made_by, region_of=base, region_starts=starts)
            continue
        if memory not in (target.dram, target.staging):
            raise MemoryPlanError(f"Assemble node '{node.name}' is placed in '{memory}'; an Assemble's output "
                                  f"lives in DRAM ('{target.dram}') or the staging memory")
        parts = tuple(_alias_input(node, k, memory, buffers) for k in range(len(node.inputs)))
        pinned = out.name in outputs
        buffers[bid] = BufferSpec(bid, out.name, memory, out.nbytes, out.dtype, tuple(out.shape),
                                  "output" if pinned else "activation", None, to_end=pinned, made_by=parts)
        for part, start in zip(parts, assemble_starts(node)):
            spec = buffers[part]
            if spec.region_of is not None:
                raise MemoryPlanError(f"part '{spec.value}' of Assemble '{node.name}' already lies in the bytes "
                                      f"of '{buffers[spec.region_of].value}'; a part is written in place into one "
                                      f"output only")
            if spec.kind == "constant":
                raise MemoryPlanError(f"part '{spec.value}' of Assemble '{node.name}' is a constant, which no "
                                      f"task writes into the output's bytes; assemble a copy of it")
            spec.region_of, spec.region_starts = bid, start


def _alias_input(node: Node, index: int, memory: str, buffers: dict[str, BufferSpec]) -> str:
    v = node.inputs[index]
    assert v is not None
    bid = buffer_id(v.name, memory)
    if bid not in buffers:
        raise MemoryPlanError(f"{node.op_type} node '{node.name}' lives in '{memory}' but its input '{v.name}' "
                              f"never reaches '{memory}'; the schedule is missing a transfer")
    return bid


def _node_of(task: Task, nodes: dict):
    try:
        return nodes[task.node]
    except KeyError:
        raise MemoryPlanError(f"compute task {task.id} runs node {task.node}, which is not in the graph; "
                              f"plan memory with the graph the schedule was made for") from None


def _describe(task: Task) -> str:
    if task.kind == "compute":
        return f"{task.op} node {task.node} on {task.engine}"
    return f"transfer of '{task.value}' {task.src}->{task.dst} on {task.engine}"
