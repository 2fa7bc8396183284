"""A placement of a schedule with predicated tasks (hetc.ir.predicates) tuned for its expected case
(``hetc.schedule.expected``).

Which engine a chosen expert's weights queue on decides a run: two chosen experts whose four weight matrices
share one DMA engine take about one matrix longer than two whose matrices are spread over two. The worst case
cannot tell these placements apart (every expert runs there); the expected case can. ``balance_gated`` moves
predicated nodes to another candidate device, or swaps two of equal cost between devices, keeping a move when the
expected makespan falls and the worst case does not grow.

The worst case binds the search to the neighbourhood of the solver's plan, which was made for every expert
running. ``for_the_expected_case`` also starts it from a plan made for the expected case (HEFT on the problem
with each expert's work and weights scaled by its chance to run: ``expected_problem``) and keeps the one that
runs faster on average, that one only when its worst case is no longer than HEFT's, the baseline's.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import replace

from hetc.schedule.expected import expected_makespan, gate_scenarios
from hetc.schedule.heuristics import heft
from hetc.schedule.listsched import replay
from hetc.schedule.problem import SchedulingProblem
from hetc.schedule.tasks import Plan, TaskKey, makespan_of, time_plan

MAX_TRIALS = 200       # re-schedules a search may try (each a list-scheduling pass, ~4 ms at 20 nodes) ...
TRIAL_NODES = 20_000   # ... and at most this many nodes re-scheduled in all: a pass costs in proportion to them


def for_the_expected_case(problem: SchedulingProblem, plan: Plan, worst_limit_ns: int | None
                          ) -> tuple[Plan, dict[str, float]]:
    """``balance_gated`` from ``plan``, or from HEFT's plan of ``expected_problem`` (its nodes in the order
    they start there) when that runs faster on average and its worst case is at most ``worst_limit_ns``
    (None: no longer than ``plan``'s); and what the searches found."""
    tuned, info = balance_gated(problem, plan)
    expected = expected_problem(problem)
    made = heft(expected)
    starts = {k[1]: s for k, (s, _e) in time_plan(expected, made)[1].items() if k[0] == "c"}
    other, other_info = balance_gated(problem, replay(problem, list(made.placement),
                                                      sorted(starts, key=lambda n: (starts[n], n))))
    limit = makespan_of(time_plan(problem, plan)[1]) if worst_limit_ns is None else worst_limit_ns
    worst = other_info["worst_ns"]
    info = {**info, "from_expected_problem_ns": other_info["expected_ns"], "its_worst_case_ns": worst}
    if other_info["expected_ns"] < info["expected_ns"] and worst <= limit:
        return other, {**info, "expected_ns": other_info["expected_ns"], "start": "expected problem"}
    return tuned, {**info, "start": "solver"}


def expected_problem(problem: SchedulingProblem) -> SchedulingProblem:
    """``problem`` as a run sees it on average: each predicated node's durations, and the bytes of the
    constants and inputs only predicated nodes read, scaled by the chance its gate is on (each routed row
    picks k of E: ``1 - (1 - k/E) ** rows``; the likelier of several readers')."""
    on = {gate: 1.0 - (1.0 - k / experts) ** rows
          for gate, (_router, k, experts, rows) in problem.gate_routers.items()}
    chance = {node: on.get(gate, 1.0) for node, gate in problem.gates.items()}
    durations = tuple({d: max(1, math.ceil(ns * chance[i])) for d, ns in durs.items()} if i in chance else durs
                      for i, durs in enumerate(problem.durations))
    values = tuple(replace(v, nbytes=max(1, math.ceil(v.nbytes * max(chance[c] for c in v.consumers))))
                   if v.producer is None and v.consumers and all(c in chance for c in v.consumers) else v
                   for v in problem.values)
    return replace(problem, durations=durations, values=values, _memo={})


def balance_gated(problem: SchedulingProblem, plan: Plan, max_trials: int = MAX_TRIALS
                  ) -> tuple[Plan, dict[str, float]]:
    """``plan``, or a re-placement of its predicated nodes with a lower expected makespan and no longer a
    worst case (see the module docstring); and what the search found, for the schedule's details."""
    scenarios = gate_scenarios(problem)
    max_trials = min(max_trials, TRIAL_NODES // max(1, problem.n))
    specs, times = time_plan(problem, plan)
    worst = makespan_of(times)
    expected = start = expected_makespan(problem, plan, scenarios, specs)
    order = _start_order(times)
    trials = moves = 0
    tried = {tuple(plan.placement)}
    improved = True
    while improved and trials < max_trials:   # passes over the moves until one changes nothing
        improved = False
        for change in _moves(problem, plan.placement):
            placement = list(plan.placement)
            for node, device in change:
                placement[node] = device
            if tuple(placement) in tried:
                continue
            if trials >= max_trials:
                break
            trials += 1
            tried.add(tuple(placement))
            candidate = replay(problem, placement, order)
            specs, times = time_plan(problem, candidate)
            span = makespan_of(times)
            if span > worst:
                continue
            mean = expected_makespan(problem, candidate, scenarios, specs)
            if mean < expected:
                plan, worst, expected, order = candidate, span, mean, _start_order(times)
                improved, moves = True, moves + 1
    return plan, {"scenarios": len(scenarios), "expected_before_ns": round(start),
                  "expected_ns": round(expected), "worst_ns": worst, "moves": moves, "trials": trials}


def _moves(problem: SchedulingProblem, placement: tuple[str | None, ...]) -> list[tuple[tuple[int, str], ...]]:
    """Each pair of predicated nodes of equal costs on different devices swapped (which keeps every device's
    load), then each predicated node to another of its devices."""
    gated = sorted(problem.gates)
    single = [((n, d),) for n in gated for d in problem.candidates(n) if d != placement[n]]
    swaps = [((a, placement[b]), (b, placement[a])) for a, b in itertools.combinations(gated, 2)
             if placement[a] != placement[b] and problem.durations[a] == problem.durations[b]]
    return swaps + single


def _start_order(times: dict[TaskKey, tuple[int, int]]) -> list[int]:
    """The compute nodes in the order their tasks start."""
    starts = {key[1]: start for key, (start, _end) in times.items() if key[0] == "c"}
    return sorted(starts, key=lambda n: (starts[n], n))
