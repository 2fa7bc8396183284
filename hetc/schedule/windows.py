"""The CP-SAT strategy: the exact model on small graphs, rolling windows on large ones.

1. HEFT gives the reference schedule and the time scale: one tick = HEFT makespan / ``TICKS`` (>= 1 ns).
2. Nodes are cut into windows of consecutive nodes in HEFT's priority order (a topological order). Each window
   is solved by CP-SAT on top of the windows already committed (fixed intervals), hinted with the HEFT
   continuation from that state; a graph that fits one window is solved whole, for its true makespan.
3. The committed engine orders are re-timed exactly in ns. If that is not better than HEFT, HEFT stands.

Windows count compute nodes only: alias nodes (Region, Assemble) ride in the window where the order puts them,
cost the model nothing, and are settled in the committed state after their window is booked.

Compile time is linear in the number of windows: each window's model only holds its own nodes, their
transfers, and the committed intervals that end within one window span before it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

from hetc.schedule.bound import any_schedule_bound, tick_bound_to_ns
from hetc.schedule.cpsat import SolverParams, WindowModel
from hetc.schedule.heuristics import heft_step, heft_timed
from hetc.schedule.listsched import ListScheduler, priority_order, replay, upward_rank
from hetc.schedule.problem import DmaSpec, SchedulingProblem
from hetc.schedule.tasks import Plan, makespan_of, time_plan

TICKS = 10_000            # the HEFT makespan in ticks: durations stay small integers
WINDOW_NODES = 60         # nodes per CP-SAT window; a graph this small is solved whole
MAX_WINDOWS = 16
SEARCH_SHARE = 0.4        # of the time limit, spent inside CP-SAT searches (0.7 for a graph solved whole) ...
EXACT_SEARCH_SHARE = 0.7
OVERHEAD_S_PER_OPTION = 0.001  # ... minus HEFT, model building, re-timing: ~1 ms per (node, candidate device)
MIN_WINDOW_S = 0.1
WINDOW_CANDIDATES = 3     # devices a window node may choose among (all of them on graphs up to EXACT_NODES)
EXACT_NODES = 30          # graphs up to this size get the full CP-SAT portfolio (it can prove optimality)


@dataclass
class CpSatOutcome:
    plan: Plan
    makespan_ns: int
    status: str               # OPTIMAL | FEASIBLE | HINT
    bound_ns: int             # proven bound on the whole problem in ns (0 when windows were used and
                              # HEFT does not meet the analytic bound)
    tick_ns: int
    details: dict = field(default_factory=dict)


def scale(problem: SchedulingProblem, tick: int) -> SchedulingProblem:
    """The same problem in ticks, every duration rounded up (so tick schedules are never optimistic)."""
    if tick == 1:
        return problem
    return replace(
        problem, _memo={},
        durations=tuple({d: math.ceil(ns / tick) for d, ns in durs.items()} for durs in problem.durations),
        dmas={k: DmaSpec(e.name, e.memories, e.latency_ns / tick, e.bandwidth * tick) for k, e in problem.dmas.items()},
        sync_ns=math.ceil(problem.sync_ns / tick),
        dram_bandwidth=None if problem.dram_bandwidth is None else problem.dram_bandwidth * tick)


def _tails(sp: SchedulingProblem, window: set[int]) -> dict[int, int]:
    """Per window node: the fastest path still to run after it, through successors outside the window (alias
    nodes count as outside: they take no time, and the path goes on through them)."""
    path = [0] * sp.n
    for node in reversed(range(sp.n)):
        path[node] = sp.fastest(node) + max((path[s] for s in sp.successors[node]), default=0)
    return {n: max((path[s] for s in sp.successors[n] if s not in window), default=0) for n in window}


def solve_cpsat(problem: SchedulingProblem, time_limit_s: float, num_workers: int = 2, seed: int = 0,
                progress: Callable[[str], None] | None = None, window_nodes: int | None = None) -> CpSatOutcome:
    heft_plan, heft_ms = heft_timed(problem)
    if not problem.compute_nodes:  # alias nodes only: nothing to place, no search
        return CpSatOutcome(heft_plan, heft_ms, "HINT", 0, 1, {"windows": 0, "heft_makespan_ns": heft_ms})
    analytic = any_schedule_bound(problem)
    if heft_ms <= analytic:   # HEFT's schedule meets a lower bound: optimal, nothing to search for
        return CpSatOutcome(heft_plan, heft_ms, "OPTIMAL", analytic, 1,
                            {"windows": 0, "heft_makespan_ns": heft_ms, "no_search": "HEFT meets the lower bound"})
    order = priority_order(problem, upward_rank(problem))
    computed = len(problem.compute_nodes)
    # Beyond MAX_WINDOWS windows, the windows grow instead: each search pays a presolve and a fork.
    window_nodes = window_nodes or max(WINDOW_NODES, math.ceil(computed / MAX_WINDOWS))
    windows = _cut(problem, order, window_nodes)
    exact = len(windows) == 1 and computed <= EXACT_NODES
    # A graph solved whole is solved in ns (its proof is then about the real problem; CP-SAT proves these as
    # fast in ns as in ticks); windows use ticks to keep their domains small.
    tick = 1 if exact else max(1, heft_ms // TICKS)
    sp = scale(problem, tick)
    options = sum(len(durations) for durations in problem.durations)
    # A graph solved whole pays presolve once and may finish early with a proof: it gets most of the limit.
    share = EXACT_SEARCH_SHARE if exact else SEARCH_SHARE
    search_s = max(0.0, share * time_limit_s - OVERHEAD_S_PER_OPTION * options)
    if search_s == 0.0 and not exact:
        # HEFT, model building and re-timing take the whole limit: windows given a token budget each
        # returned their hint (VGG-19 and DenseNet-121 on multi-npu) and only made the stage overrun it.
        needed = math.ceil(OVERHEAD_S_PER_OPTION * options / share) + 1
        note = (f"no CP-SAT search: the {time_limit_s:g} s time limit goes to HEFT and model building for "
                f"{options:,} (node, device) options; a limit of {needed} s or more leaves time to search")
        if progress:
            progress(note)
        return CpSatOutcome(heft_plan, heft_ms, "HINT", 0, 1, {"windows": 0, "heft_makespan_ns": heft_ms,
                                                               "no_search": note, "time_limit_s": time_limit_s})
    state = ListScheduler(sp)
    statuses: list[str] = []
    bound_ticks, solver_wall = 0, 0.0
    for k, window in enumerate(windows):
        # Budgets are fixed shares of the limit (never "what is left"), so a rerun gets the same budgets and,
        # with deterministic-time limits, the same answer. The rest pays for HEFT, model building, re-timing.
        tasks = [n for n in window if not problem.is_alias(n)]
        budget = max(MIN_WINDOW_S, search_s * len(tasks) / max(1, computed))
        hint = state.clone()
        for node in window:
            heft_step(hint, node)
        model = WindowModel(sp, state, tasks, _tails(sp, set(tasks)), hint,
                            max_candidates=None if exact else WINDOW_CANDIDATES)
        result = model.solve(SolverParams(budget, num_workers, seed, lns_only=not exact))
        solver_wall += result.wall_s
        statuses.append(result.status)
        if result.nodes:
            for value, dst, engine, start in result.transfers:
                state.book_transfer(value, dst, engine, start)
            for node, device, start in result.nodes:
                state.book_node(node, device, start)
            for node in window:
                if problem.is_alias(node):
                    state.settle(node)
        else:
            state = hint
        if len(windows) == 1 and result.nodes:
            bound_ticks = result.bound
        if progress:
            progress(f"cpsat window {k + 1}/{len(windows)}: {result.status}, {len(tasks)} nodes, "
                     f"{result.wall_s:.2f}s")
    # CP-SAT's decisions are its placement and compute order; its DMA queues ignore the bounded lead
    # (hetc.schedule.tasks.lead_deps), so the list scheduler fills them again under that rule.
    decided = state.plan()
    started = {node: state.finish[node] - sp.durations[node][decided.placement[node]]
               for node in problem.compute_nodes}
    plan = replay(problem, list(decided.placement), sorted(started, key=lambda n: (started[n], n)))
    makespan = makespan_of(time_plan(problem, plan)[1])
    bound_ns = tick_bound_to_ns(bound_ticks, problem, sp, tick) if bound_ticks else 0
    details = {"windows": len(windows), "window_nodes": window_nodes, "window_status": _count(statuses),
               "heft_makespan_ns": heft_ms, "cpsat_makespan_ns": makespan, "solver_wall_s": round(solver_wall, 3),
               "num_workers": num_workers, "seed": seed, "time_limit_s": time_limit_s}
    proven = max(bound_ns, analytic)
    if makespan >= heft_ms:
        return CpSatOutcome(heft_plan, heft_ms, "OPTIMAL" if proven >= heft_ms else "HINT", bound_ns, tick,
                            details)
    status = "OPTIMAL" if proven >= makespan else "FEASIBLE"
    return CpSatOutcome(plan, makespan, status, bound_ns, tick, details)


def _cut(problem: SchedulingProblem, order: list[int], size: int) -> list[list[int]]:
    """``order`` cut into windows of ``size`` compute nodes each; alias nodes go with the window they fall in
    (a tail of alias nodes alone joins the last window)."""
    windows: list[list[int]] = [[]]
    count = 0
    for node in order:
        if count == size and not problem.is_alias(node):
            windows.append([])
            count = 0
        windows[-1].append(node)
        count += not problem.is_alias(node)
    return windows


def _count(statuses: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return counts
