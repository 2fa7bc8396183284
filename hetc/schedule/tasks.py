"""The task graph a placement implies, and exact ASAP timing of it for given engine orders.

This module is the single statement of the execution model inside the scheduler: which copies a value needs
(one per destination memory, shared by its consumers there; an intermediate DRAM copy reused), which task
each task waits for, and when a wait costs a semaphore. HEFT, greedy and CP-SAT all end in ``Plan`` and are
timed by ``asap``, so every strategy's artifact obeys the same rules exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

from hetc.errors import ScheduleError
from hetc.schedule.problem import SchedulingProblem

# A task is named by a key: ("c", node) for a compute task, ("x", value, dst_memory) for a transfer.
TaskKey = tuple


def compute_key(node: int) -> TaskKey:
    return ("c", node)


def transfer_key(value: int, dst: str) -> TaskKey:
    return ("x", value, dst)


def origin(problem: SchedulingProblem, value: int, placement: list[str] | tuple[str, ...]) -> str:
    """The memory a value is born in: its producer's home, or DRAM for inputs and constants."""
    producer = problem.values[value].producer
    return problem.dram if producer is None else problem.home(placement[producer])


def copies_needed(problem: SchedulingProblem, value: int, placement: list[str] | tuple[str, ...],
                  consumers: tuple[int, ...] | None = None) -> list[tuple[str, str]]:
    """(src, dst) memory pairs of the transfers of one value, intermediate copies (DRAM, staging) first.
    A host value needs none: only CPUs (homed in DRAM) touch it, and it stays in the host's heap."""
    spec = problem.values[value]
    if spec.is_host:
        return []
    born = origin(problem, value, placement)
    wanted = {problem.home(placement[c]) for c in (spec.consumers if consumers is None else consumers)}
    if spec.is_output:
        wanted.add(problem.dram)
    wanted.discard(born)
    hops: dict[str, tuple[int, str]] = {}
    for dst in wanted:
        for position, (a, b) in enumerate(problem.route(born, dst)):
            hops[b] = min(hops.get(b, (position, a)), (position, a))
    order = sorted(hops, key=lambda m: (hops[m][0], m))
    return [(hops[m][1], m) for m in order]


@dataclass(frozen=True)
class TaskSpec:
    key: TaskKey
    engine: str
    duration: int
    deps: tuple[TaskKey, ...]


def derive_tasks(problem: SchedulingProblem, placement: list[str] | tuple[str, ...],
                 dma_choice: dict[tuple[int, str], str]) -> dict[TaskKey, TaskSpec]:
    """Every task the placement implies, in a topological order (dicts keep insertion order).

    ``dma_choice`` maps (value, dst memory) to the DMA engine doing that copy; a missing entry takes the
    first engine serving the hop."""
    tasks: dict[TaskKey, TaskSpec] = {}
    made: set[int] = set()

    def make_copies(value: int) -> None:
        made.add(value)
        producer = problem.values[value].producer
        born = origin(problem, value, placement)
        for src, dst in copies_needed(problem, value, placement):
            engine = dma_choice.get((value, dst)) or problem.engines_between(src, dst)[0]
            if engine not in problem.engines_between(src, dst):
                raise ScheduleError(f"DMA engine '{engine}' does not connect '{src}' and '{dst}'")
            if src != born:
                deps: tuple[TaskKey, ...] = (transfer_key(value, src),)
            else:
                deps = () if producer is None else (compute_key(producer),)
            key = transfer_key(value, dst)
            tasks[key] = TaskSpec(key, engine, problem.transfer_ns(value, engine), deps)

    for value, spec in enumerate(problem.values):
        if spec.producer is None:
            make_copies(value)
    for node in range(problem.n):
        device = placement[node]
        if device not in problem.durations[node]:
            raise ScheduleError(f"node '{problem.node_names[node]}' cannot run on '{device}'")
        home = problem.home(device)
        deps = []
        for value in problem.node_inputs[node]:
            producer = problem.values[value].producer
            if problem.values[value].is_host or origin(problem, value, placement) == home:
                if producer is not None:
                    deps.append(compute_key(producer))
            else:
                deps.append(transfer_key(value, home))
        key = compute_key(node)
        tasks[key] = TaskSpec(key, device, problem.durations[node][device], tuple(dict.fromkeys(deps)))
        for value in problem.node_outputs[node]:
            make_copies(value)
    return tasks


@dataclass
class Plan:
    """A complete decision: placement, DMA engine per copy, and the task order on every engine."""

    placement: tuple[str, ...]
    dma_choice: dict[tuple[int, str], str]
    orders: dict[str, list[TaskKey]]


def asap(problem: SchedulingProblem, tasks: dict[TaskKey, TaskSpec],
         orders: dict[str, list[TaskKey]]) -> dict[TaskKey, tuple[int, int]]:
    """Earliest start of every task given data deps (+ sync across engines) and each engine's order.

    Raises ValueError when the orders contradict the data dependencies (a cycle)."""
    preds: dict[TaskKey, list[tuple[TaskKey, int]]] = {k: [] for k in tasks}
    for t in tasks.values():
        for d in t.deps:
            preds[t.key].append((d, 0 if tasks[d].engine == t.engine else problem.sync_ns))
    for engine, keys in orders.items():
        for a, b in zip(keys, keys[1:]):
            preds[b].append((a, 0))
    listed = {k for keys in orders.values() for k in keys}
    if listed != set(tasks):
        raise ValueError(f"engine orders miss {len(set(tasks) - listed)} tasks")
    succs: dict[TaskKey, list[TaskKey]] = {k: [] for k in tasks}
    indegree = {k: len(p) for k, p in preds.items()}
    for k, ps in preds.items():
        for p, _ in ps:
            succs[p].append(k)
    ready = [k for k, d in indegree.items() if d == 0]
    times: dict[TaskKey, tuple[int, int]] = {}
    while ready:
        k = ready.pop()
        start = max((times[p][1] + gap for p, gap in preds[k]), default=0)
        times[k] = (start, start + tasks[k].duration)
        for s in succs[k]:
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.append(s)
    if len(times) != len(tasks):
        raise ValueError("engine orders contradict the data dependencies")
    return times


def time_plan(problem: SchedulingProblem, plan: Plan) -> tuple[dict[TaskKey, TaskSpec],
                                                                dict[TaskKey, tuple[int, int]]]:
    tasks = derive_tasks(problem, plan.placement, plan.dma_choice)
    return tasks, asap(problem, tasks, plan.orders)


def makespan_of(times: dict[TaskKey, tuple[int, int]]) -> int:
    return max((e for _, e in times.values()), default=0)


def orders_from_times(tasks: dict[TaskKey, TaskSpec], starts: dict[TaskKey, float]) -> dict[str, list[TaskKey]]:
    """Engine orders by start time; ties keep the topological order of ``tasks``."""
    rank = {k: i for i, k in enumerate(tasks)}
    orders: dict[str, list[TaskKey]] = {}
    for k in sorted(tasks, key=lambda k: (starts[k], rank[k])):
        orders.setdefault(tasks[k].engine, []).append(k)
    return orders
