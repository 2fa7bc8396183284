"""``schedule(graph, target, strategy=...)``: the public entry point of the stage."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Sequence

from hetc.errors import ScheduleError
from hetc.ir.tiles import is_alias
from hetc.schedule.artifact import Schedule, SolverStats, Task
from hetc.schedule.bound import bound_parts, lower_bound
from hetc.schedule.gated import for_the_expected_case
from hetc.schedule.heuristics import greedy, heft, single
from hetc.schedule.listsched import replay
from hetc.schedule.problem import SchedulingProblem, build_problem
from hetc.schedule.tasks import Plan, TaskKey, alias_memory, copy_gate, own_ns, time_plan
from hetc.schedule.windows import solve_cpsat

if TYPE_CHECKING:
    from hetc.ir import Graph, Node
    from hetc.target import Target

STRATEGIES = ("cpsat", "heft", "greedy", "single:<device>")


def default_time_limit(nodes: int) -> float:
    """10 s for graphs of 100 nodes and more, 0.1 s per node below that, at least 2 s."""
    return float(min(10.0, max(2.0, nodes / 10)))


def schedule(graph: Graph, target: Target, strategy: str = "cpsat", time_limit_s: float | None = None,
             num_workers: int = 2, seed: int = 0, progress: Callable[[str], None] | None = None) -> Schedule:
    """Place every node on a device and time every compute and transfer task.

    strategy: "cpsat" (default), "heft", "greedy" or "single:<device>". Raises ScheduleError for an unknown
    strategy or device, or a node no device (or not the chosen one) can run."""
    check_strategy(strategy, target)
    if time_limit_s is not None and time_limit_s <= 0:
        raise ScheduleError(f"time limit must be positive, got {time_limit_s}; pass e.g. time_limit_s=10")
    began = time.perf_counter()
    problem = build_problem(graph, target)
    refusal = (lambda i: str(target.supports(graph.node(problem.node_ids[i]), strategy[7:])))
    return solve(problem, strategy, time_limit_s, num_workers, seed, progress, refusal, began)


def solve(problem: SchedulingProblem, strategy: str = "cpsat", time_limit_s: float | None = None,
          num_workers: int = 2, seed: int = 0, progress: Callable[[str], None] | None = None,
          refusal: Callable[[int], str] | None = None, began: float | None = None) -> Schedule:
    """``schedule`` on an already built problem (tests and benchmarks start here)."""
    began = time.perf_counter() if began is None else began
    bound = lower_bound(problem)
    tick, details = 1, {}
    if strategy == "cpsat":
        limit = default_time_limit(len(problem.compute_nodes)) if time_limit_s is None else time_limit_s
        outcome = solve_cpsat(problem, limit, num_workers, seed, progress)
        plan, status, tick, details = outcome.plan, outcome.status, outcome.tick_ns, outcome.details
        bound = max(bound, outcome.bound_ns)
        if problem.gates:   # predicated tasks: the plan that runs fastest on average, no worse than HEFT at worst
            plan, details["expected_case"] = for_the_expected_case(problem, plan, details.get("heft_makespan_ns"))
    elif strategy == "heft":
        plan, status = heft(problem), "HEURISTIC"
    elif strategy == "greedy":
        plan, status = greedy(problem), "HEURISTIC"
    elif strategy.startswith("single:"):
        plan, status = single(problem, strategy[len("single:"):], refusal), "HEURISTIC"
    else:
        raise ScheduleError(f"unknown scheduling strategy '{strategy}'; choose one of: {', '.join(STRATEGIES)}")
    tasks = to_tasks(problem, plan)
    makespan = max((t.end_ns for t in tasks), default=0)
    details["bound_parts_ns"] = dict(bound_parts(problem))   # (a copy: the problem keeps its own)
    stats = SolverStats(strategy=strategy, status=status, objective_ns=makespan, best_bound_ns=bound,
                        wall_s=round(time.perf_counter() - began, 4), tick_ns=tick, details=details)
    placement = {problem.node_ids[i]: plan.placement[i] for i in problem.compute_nodes}
    aliases = {problem.node_ids[i]: alias_memory(problem, i, plan.placement) for i in problem.alias_ops}
    return Schedule(tasks=tasks, placement=placement, stats=stats, lower_bound_ns=bound, aliases=aliases)


def schedule_placement(graph: Graph, target: Target, placement: dict[int, str],
                       order: Sequence[int] | None = None,
                       durations: Callable[[Node, str], int] | None = None,
                       stats: SolverStats | None = None) -> Schedule:
    """The schedule of a placement decided elsewhere (node id -> device; alias nodes need none): nodes
    committed in ``order`` (node ids; default topological), each as early as its engine and operands allow,
    by the list scheduler every strategy shares, timed by ``hetc.schedule.tasks``. ``durations(node, device)``
    overrides the cost model (a placement on a device the node is no candidate of then needs it). The memory
    planner reschedules a moved node with this; tests build their hand-made plans with it."""
    def durations_of(node: Node) -> dict[str, int]:
        return {placement[node.id]: durations(node, placement[node.id])}

    missing = [n.name or str(n.id) for n in graph if not is_alias(n) and n.id not in placement]
    if missing:
        raise ScheduleError(f"the placement leaves {len(missing)} node(s) unplaced ({', '.join(missing[:5])})")
    problem = build_problem(graph, target, durations_of if durations is not None else None)
    index = {nid: i for i, nid in enumerate(problem.node_ids)}
    chosen: list[str | None] = [None if problem.is_alias(i) else placement[nid] for i, nid in
                                enumerate(problem.node_ids)]
    for i in problem.compute_nodes:
        if chosen[i] not in problem.durations[i]:
            raise ScheduleError(f"node '{problem.node_names[i]}' cannot run on '{chosen[i]}'")
    plan = replay(problem, chosen, [index[nid] for nid in order] if order is not None else [])
    tasks = to_tasks(problem, plan)
    makespan = max((t.end_ns for t in tasks), default=0)
    bound = lower_bound(problem)
    stats = replace(stats, objective_ns=makespan) if stats is not None else \
        SolverStats("fixed", "HEURISTIC", makespan, bound)
    aliases = {problem.node_ids[i]: alias_memory(problem, i, plan.placement) for i in problem.alias_ops}
    return Schedule(tasks=tasks, placement={problem.node_ids[i]: chosen[i] for i in problem.compute_nodes},
                    stats=stats, lower_bound_ns=bound, aliases=aliases)


def check_strategy(strategy: str, target: Target) -> None:
    """A ScheduleError unless ``strategy`` names a strategy (and a device of ``target``); callers check early
    so a typo fails before minutes of work."""
    if strategy in ("cpsat", "heft", "greedy"):
        return
    if strategy.startswith("single:"):
        device = strategy[len("single:"):]
        if device not in target.devices:
            raise ScheduleError(f"unknown device '{device}' in strategy '{strategy}'; target '{target.name}' has: "
                                + ", ".join(f"single:{d}" for d in target.devices))
        return
    choices = ["cpsat", "heft", "greedy"] + [f"single:{d}" for d in target.devices]
    raise ScheduleError(f"unknown scheduling strategy '{strategy}'; choose one of: {', '.join(choices)}")


def to_tasks(problem: SchedulingProblem, plan: Plan) -> tuple[Task, ...]:
    """The plan's tasks, timed exactly in ns, numbered in start order."""
    specs, times = time_plan(problem, plan)
    rank = {k: i for i, k in enumerate(specs)}
    keys = sorted(specs, key=lambda k: (times[k][0], times[k][1], rank[k]))
    ids: dict[TaskKey, int] = {k: i for i, k in enumerate(keys)}
    tasks = []
    for key in keys:
        spec, (start, end) = specs[key], times[key]
        deps = tuple(sorted(ids[d] for d in spec.deps))
        if key[0] == "c":
            node = key[1]
            gate = problem.gates.get(node)
            work = own_ns(problem, key, spec.engine)
            tasks.append(Task(ids[key], "compute", spec.engine, start, end, deps, node=problem.node_ids[node],
                              op=problem.ops[node], when=None if gate is None else problem.values[gate].name,
                              work_ns=work if work != end - start else None))
        else:
            value, dst = key[1], key[2]
            src = next(m for m in problem.dmas[spec.engine].memories if m != dst)
            gate = copy_gate(problem, value, dst, plan.placement)
            work = own_ns(problem, key, spec.engine)
            tasks.append(Task(ids[key], "transfer", spec.engine, start, end, deps, value=problem.values[value].name,
                              src=src, dst=dst, bytes=problem.values[value].nbytes,
                              when=None if gate is None else problem.values[gate].name,
                              work_ns=work if work != end - start else None))
    return tuple(tasks)


__all__ = ["schedule", "solve", "schedule_placement", "STRATEGIES", "default_time_limit", "to_tasks"]
