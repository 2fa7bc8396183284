"""Independent check of a Schedule against the graph and the target: the execution model's invariants.

It re-derives nothing from the scheduler's own data structures, so a scheduler bug cannot hide behind itself.
Alias nodes (``hetc.ir.tiles``) are checked against the rules of DESIGN.md / ``hetc.schedule.tasks``: no task,
the memory ``Schedule.aliases`` records, every reader elsewhere served by a transfer, and every wait on an
alias output covering the tasks that make it available (an Assemble's parts written into its memory, the
one ``hetc.schedule.problem.assembly_memories`` gives it).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

from hetc.ir.immediates import is_immediate
from hetc.ir.tiles import REGION, is_alias
from hetc.schedule.artifact import Schedule, Task, in_program_order
from hetc.schedule.problem import assembly_memories
from hetc.schedule.tasks import handoff_ns

if TYPE_CHECKING:
    from hetc.ir import Graph, Value
    from hetc.target import Target


class ScheduleInvariantError(AssertionError):
    """A schedule breaks an invariant: an internal bug in hetc, not a user error."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        shown = "\n  ".join(violations[:20])
        more = f"\n  ... and {len(violations) - 20} more" if len(violations) > 20 else ""
        super().__init__(f"schedule breaks {len(violations)} invariant(s):\n  {shown}{more}")


def verify_schedule(schedule: Schedule, graph: Graph, target: Target) -> None:
    errors: list[str] = []
    by_id = {t.id: t for t in schedule.tasks}
    if len(by_id) != len(schedule.tasks):
        errors.append("task ids are not unique")
    _timing(schedule, by_id, target, errors)
    compute = _compute(schedule, graph, target, errors)
    transfers: dict[tuple[str, str], Task] = {}
    for t in schedule.tasks:
        if t.kind == "transfer":
            if (t.value, t.dst) in transfers:
                errors.append(f"value '{t.value}' is copied into '{t.dst}' twice (tasks {transfers[(t.value, t.dst)].id}"
                              f" and {t.id}); one copy per memory is shared by its consumers")
            transfers[(t.value, t.dst)] = t
    # An Assemble lives where the rule puts it, or in DRAM (hetc.planning joins in DRAM where the staging
    # memory overflowed): the schedule records which; anything else is reported as a wrong alias memory.
    assembly = {node: recorded if (recorded := schedule.aliases.get(node)) == target.dram else memory
                for node, memory in assembly_memories(graph.topo_order(), target,
                                                      {v.name for v in graph.outputs}).items()}
    born = _Birth(target, compute, transfers, errors, assembly)
    _aliases(schedule, graph, born, errors)
    for t in schedule.tasks:
        if t.kind == "transfer":
            _transfer(t, graph, target, born, by_id, errors)
    for node in graph.nodes:
        task = compute.get(node.id)
        if task is None:
            continue
        home = target.home(task.engine)
        for v in node.present_inputs:
            if not is_immediate(v) and not _resident(v, home, task, born, transfers):
                errors.append(f"task {task.id} ({node.name or node.op_type} on {task.engine}) reads '{v.name}' but no "
                              f"dependency makes it resident in '{home}'")
    for v in graph.outputs:
        where = born(v)
        if where is not None and where[0] != target.dram and (v.name, target.dram) not in transfers:
            errors.append(f"graph output '{v.name}' stays in '{where[0]}': it must end in '{target.dram}'")
    if errors:
        raise ScheduleInvariantError(errors)


class _Birth:
    """Per value: the memory it is born in and the tasks after which it is there (None when unknown: an error
    already reported). A Region's output is its input's; an Assemble's is in its memory (``assembly``, by node
    id) after every part is."""

    def __init__(self, target: Target, compute: dict[int, Task], transfers: dict[tuple[str, str], Task],
                 errors: list[str], assembly: dict[int, str]) -> None:
        self.target, self.compute, self.transfers, self.errors = target, compute, transfers, errors
        self.assembly = assembly
        self.memo: dict[str, tuple[str, list[Task]] | None] = {}

    def __call__(self, v: Value) -> tuple[str, list[Task]] | None:
        if v.name not in self.memo:
            self.memo[v.name] = self._find(v)
        return self.memo[v.name]

    def _find(self, v: Value) -> tuple[str, list[Task]] | None:
        node, dram = v.producer, self.target.dram
        if node is None:
            return dram, []
        if not is_alias(node):
            task = self.compute.get(node.id)
            return None if task is None else (self.target.home(task.engine), [task])
        if node.op_type == REGION:
            return self(node.inputs[0])
        tasks: list[Task] = []
        joined = self.assembly[node.id]
        for part in node.present_inputs:
            where = self(part)
            if where is None:
                return None
            if where[0] == joined:
                tasks += where[1]
            elif (part.name, joined) in self.transfers:
                tasks.append(self.transfers[(part.name, joined)])
            else:
                self.errors.append(f"Assemble '{node.name or node.id}': part '{part.name}' is born in '{where[0]}' "
                                   f"and never written to '{joined}', where the Assemble's output lives")
                return None
        return joined, tasks


def _aliases(schedule: Schedule, graph: Graph, born: _Birth, errors: list[str]) -> None:
    for node in graph.nodes:
        if not is_alias(node):
            if node.id in schedule.aliases:
                errors.append(f"node {node.id} ({node.name or node.op_type}) is not an alias node but has an alias "
                              f"memory")
            continue
        if node.id in schedule.placement:
            errors.append(f"alias node {node.id} ({node.name or node.op_type}) is placed on "
                          f"'{schedule.placement[node.id]}'; alias nodes run on no device")
        where = born(node.outputs[0])
        recorded = schedule.aliases.get(node.id)
        if where is not None and recorded != where[0]:
            errors.append(f"alias node {node.id} ({node.name or node.op_type}): its output lives in '{where[0]}', "
                          f"the schedule records '{recorded}'")


def _timing(schedule: Schedule, by_id: dict[int, Task], target: Target, errors: list[str]) -> None:
    lanes: dict[str, list[Task]] = defaultdict(list)
    for t in schedule.tasks:
        if t.start_ns < 0 or t.end_ns < t.start_ns:
            errors.append(f"task {t.id} has a bad interval [{t.start_ns}, {t.end_ns})")
        known = target.devices if t.kind == "compute" else target.dmas
        if t.engine not in known:
            errors.append(f"task {t.id} ({t.kind}) runs on unknown engine '{t.engine}'")
        lanes[t.engine].append(t)
        for d in t.deps:
            dep = by_id.get(d)
            if dep is None:
                errors.append(f"task {t.id} depends on missing task {d}")
                continue
            gap = handoff_ns(dep.engine, t.engine, math.ceil(target.sync_ns))
            if t.start_ns < dep.end_ns + gap:
                errors.append(f"task {t.id} starts at {t.start_ns} ns before its dependency {d} ends at {dep.end_ns} ns"
                              + (f" + sync {gap} ns" if gap else ""))
    for engine, tasks in lanes.items():
        tasks = in_program_order(tasks)
        for a, b in zip(tasks, tasks[1:]):
            if b.start_ns < a.end_ns:
                errors.append(f"engine '{engine}' runs tasks {a.id} and {b.id} at once")


def _compute(schedule: Schedule, graph: Graph, target: Target, errors: list[str]) -> dict[int, Task]:
    nodes = graph.node_map()
    compute: dict[int, Task] = {}
    for t in schedule.tasks:
        if t.kind != "compute":
            continue
        node = nodes.get(t.node)
        if node is None:
            errors.append(f"task {t.id} computes unknown node {t.node}")
            continue
        if is_alias(node):
            errors.append(f"task {t.id} computes alias node {t.node} ({node.name or node.op_type}); an alias node "
                          "is not a task")
            continue
        if t.node in compute:
            errors.append(f"node {t.node} is computed twice (tasks {compute[t.node].id} and {t.id})")
        compute[t.node] = t
        if t.engine not in target.devices:
            continue
        why = target.supports(node, t.engine)
        if not why:
            errors.append(f"task {t.id} runs {node.name or node.op_type} on '{t.engine}', which refuses it: {why}")
        elif t.duration_ns < math.ceil(target.cost(node, t.engine)):
            errors.append(f"task {t.id} lasts {t.duration_ns} ns, less than its cost on '{t.engine}'")
        if schedule.placement.get(t.node) != t.engine:
            errors.append(f"placement says node {t.node} is on '{schedule.placement.get(t.node)}', its task on '{t.engine}'")
    for node in graph.nodes:
        if node.id not in compute and not is_alias(node):
            errors.append(f"node {node.id} ({node.name or node.op_type}) has no compute task")
    return compute


def _transfer(t: Task, graph: Graph, target: Target, born: _Birth,
              by_id: dict[int, Task], errors: list[str]) -> None:
    value = graph.values.get(t.value)
    if value is None:
        errors.append(f"transfer {t.id} moves unknown value '{t.value}'")
        return
    if value.host is not None:
        errors.append(f"transfer {t.id} moves host value '{t.value}' ({value.host}); host values stay in the "
                      "host's heap and are never copied")
        return
    if t.engine in target.dmas:
        if not target.dmas[t.engine].serves(t.src, t.dst):
            errors.append(f"transfer {t.id} uses '{t.engine}', which does not connect '{t.src}' and '{t.dst}'")
        elif t.duration_ns < math.ceil(target.transfer_ns(value.nbytes, t.engine)):
            errors.append(f"transfer {t.id} lasts {t.duration_ns} ns, less than moving {value.nbytes} bytes takes")
    if t.bytes != value.nbytes:
        errors.append(f"transfer {t.id} moves {t.bytes} bytes of '{t.value}', which has {value.nbytes}")
    deps = [by_id[d] for d in t.deps if d in by_id]
    where = born(value)
    if where is None:
        return
    if where[0] == t.src:
        ok = all(task in deps for task in where[1])
    else:
        ok = any(d.kind == "transfer" and d.value == t.value and d.dst == t.src for d in deps)
    if not ok:
        errors.append(f"transfer {t.id} copies '{t.value}' from '{t.src}', where no dependency put it")


def _resident(v: Value, home: str, task: Task, born: _Birth,
              transfers: dict[tuple[str, str], Task]) -> bool:
    where = born(v)
    if where is None:
        return True  # the missing producer (or part copy) is reported already
    if where[0] == home:
        return all(t.id in task.deps for t in where[1])
    copy = transfers.get((v.name, home))
    return copy is not None and copy.id in task.deps
