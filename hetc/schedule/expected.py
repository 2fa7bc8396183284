"""The expected case of a schedule with predicated tasks (hetc.ir.predicates): the runs to weigh and a plan's
mean makespan over them.

A schedule keeps time for every predicated task (its makespan is the worst case, every gate on); a run skips
the tasks whose gate is off, and the engines' queues close up behind them. ``gate_scenarios`` lists the gates
on in the runs to weigh: each row a router routes picks ``k`` of its ``experts`` uniformly (all combinations for
one row when few, else a seeded sample); with many rows almost every expert is on, and the expected case is the
worst. ``expected_makespan`` times a plan with the off tasks at zero duration, waiting for their gates alone
(a skipped compute writes no more than its zeros; a skipped copy moves nothing: ``tasks.skipped_deps``), by the
same timing rule as the worst case (``tasks.time_plan``): the tasks that run, at their own durations, share
DRAM's bandwidth with those beside them in that run, not with the skipped ones beside them at worst. Every
strategy that weighs plans of a predicated problem weighs them by it: HEFT among its runs
(``heuristics.heft_timed``), the search for the expected case (``gated``).
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from typing import Sequence, TypeVar

from hetc.schedule.dram import dram_ask
from hetc.schedule.problem import SchedulingProblem
from hetc.schedule.tasks import (Plan, TaskKey, TaskSpec, copy_gate, earliest_times, makespan_of, own_ns,
                                 shared_times, skipped_deps, time_plan)

G = TypeVar("G")       # a gate: a value index (the scheduler's) or a value name (a bundle's)
MAX_SCENARIOS = 64     # all of a top-2 of 8 router's 28 choices; a seeded sample beyond


def gate_scenarios(problem: SchedulingProblem, limit: int = MAX_SCENARIOS, seed: int = 0) -> list[frozenset[int]]:
    """``routing_choices`` of the problem's gates (value indices)."""
    return routing_choices(sorted(set(problem.gates.values())), problem.gate_routers, limit, seed)


def routing_choices(gates: Sequence[G], routing: dict[G, tuple[int, int, int, int]], limit: int = MAX_SCENARIOS,
                    seed: int = 0) -> list[frozenset[G]]:
    """Sets of ``gates`` on together in one run, ``routing`` giving per gate a router decides (router id, k,
    experts, rows: ``hetc.ir.predicates.gate_routing``): per router, each of the rows it routes picks ``k`` of
    its ``experts`` uniformly and an expert's gate is on when some row picked it, a router's gates standing for
    its first experts (the rest route to unpredicated work). Every combination when a router routes one row
    and they are few, else a seeded sample. Gates no router decides are always on."""
    by_router: dict[int, list[G]] = {}
    for gate in gates:
        if gate in routing:
            by_router.setdefault(routing[gate][0], []).append(gate)
    fixed = frozenset(g for g in gates if g not in routing)
    picks = {r: routing[members[0]][1:] for r, members in by_router.items()}   # (k, experts, rows)
    total = math.prod(math.comb(experts, k) for k, experts, _rows in picks.values())
    if total <= limit and all(rows == 1 for _k, _e, rows in picks.values()):
        per_router = [[frozenset(members[i] for i in combo if i < len(members))
                       for combo in itertools.combinations(range(picks[r][1]), picks[r][0])]
                      for r, members in by_router.items()]
        return [fixed.union(*choice) for choice in itertools.product(*per_router)]
    rng = random.Random(seed)

    def picked(router: int, members: list[G]) -> frozenset[G]:
        k, experts, rows = picks[router]
        chosen = set().union(*(rng.sample(range(experts), k) for _ in range(rows)))
        return frozenset(members[i] for i in chosen if i < len(members))

    return [fixed.union(*(picked(r, members) for r, members in by_router.items())) for _ in range(limit)]


def expected_makespan(problem: SchedulingProblem, plan: Plan, scenarios: list[frozenset[int]],
                      specs: dict[TaskKey, TaskSpec] | None = None) -> float:
    """The mean makespan of ``plan`` over ``scenarios`` (see the module docstring); ``specs``: its tasks as
    ``time_plan`` gives them, when the caller has them."""
    specs = time_plan(problem, plan)[0] if specs is None else specs
    gate_of: dict[TaskKey, int] = {}
    for key in specs:
        gate = problem.gates.get(key[1]) if key[0] == "c" else copy_gate(problem, key[1], key[2], plan.placement)
        if gate is not None:
            gate_of[key] = gate
    skipped = {k: replace(specs[k], duration=0, deps=skipped_deps(problem, k, plan.placement)) for k in gate_of}
    shared = problem.dram_bandwidth is not None   # timed as time_plan times the worst case
    own = {k: own_ns(problem, k, t.engine) for k, t in specs.items()} if shared else {}
    asks = {k: a for k, t in specs.items() if (a := dram_ask(problem, k, t.engine, own[k]))} if shared else {}
    running = {k: replace(t, duration=own[k]) for k, t in specs.items()} if shared else specs
    order = list(specs)   # topological: one pass per scenario
    total = 0
    for on in scenarios:
        run = {k: skipped[k] if k in gate_of and gate_of[k] not in on else t for k, t in running.items()}
        if shared:
            times = shared_times(run, plan.orders, problem.sync_ns, {},
                                 {k: a for k, a in asks.items() if run[k].duration})
        else:
            times = earliest_times(run, plan.orders, problem.sync_ns, order_hint=order)
        total += makespan_of(times)
    return total / max(1, len(scenarios))
