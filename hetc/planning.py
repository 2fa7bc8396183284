"""Tiling, scheduling and memory planning, the three decisions that interact: one plan comes out.

The tile budget (``hetc.target.tiling``) decides how many tasks and copies the scheduler orders; the scheduler
sees its scratchpads only through each copy's bounded lead; the memory planner then fits what it was given,
postponing copies and spilling where a scratchpad is full. So ``plan_tiled`` runs them in order and adjusts
the budget on the planner's evidence:

* the planner cannot place the tiles: smaller tiles, twice at most;
* the planner's repairs lengthened the schedule by more than ``REPAIRED_RETRY`` (memory the schedule did not
  leave room for): the wider budget is tried once too (fewer tiles, fewer copies to fit), and the faster plan
  ships. That try gives up where the planner would have to move a node to another device: with half a
  2 MiB core per tile, VGG-19's plan on `multi-npu` took 555 s of such moves and came out 3.5x slower.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hetc.errors import MemoryPlanError
from hetc.ir import Graph
from hetc.memory import MemoryPlan, plan_memory
from hetc.memory.artifact import spills_note
from hetc.passes.alias_ops import alias_ops
from hetc.schedule import Schedule, schedule as run_scheduler
from hetc.stages import StageClock
from hetc.target import Target
from hetc.target.tiling import TILE_BUDGET_FRACTION, WIDE_TILE_BUDGET_FRACTION, tile_graph, tiling_note

# Shipped / scheduled makespan above which the wider tile budget is tried as well. ResNet-50 on `multi-npu`
# (1.087) is the one light-model build above it; the next is 1.029 (docs/benchmarks.md, "Tile budget").
REPAIRED_RETRY = 1.05


@dataclass
class SchedulingChoices:
    """What the caller chose for scheduling (``BuildOptions``' fields of the same names)."""

    scheduler: str
    time_limit_s: float | None
    num_workers: int
    seed: int
    tiling: bool


def plan_tiled(untiled: Graph, target: Target, choices: SchedulingChoices, clock: StageClock
               ) -> tuple[Graph, MemoryPlan]:
    """The graph that ships (tiled, with its alias nodes) and its memory plan, whose schedule is the one.
    Where the plan overflows the staging memory in which split values are joined (``Target.join_memory``),
    which the scheduler does not see, it is made again with every value joined in DRAM."""
    try:
        return _plan_tiled(untiled, target, choices, clock)
    except MemoryPlanError as exc:
        if not _joins_overflowed(exc, target):
            raise
        with clock.stage("memory") as say:
            say(f"{exc.args[0].split(';')[0]}; planning again with split values joined in DRAM")
        return _plan_tiled(untiled, target.joining_in_dram(), choices, clock)


def _joins_overflowed(exc: MemoryPlanError, target: Target) -> bool:
    """Whether ``exc`` is the staging memory, where split values are joined, overflowing."""
    joins = target.join_memory(0)
    return joins != target.dram and exc.memory == joins


def _plan_tiled(untiled: Graph, target: Target, choices: SchedulingChoices, clock: StageClock
                ) -> tuple[Graph, MemoryPlan]:
    fraction = TILE_BUDGET_FRACTION
    while True:
        try:
            graph, scheduled, plan = _plan_at(untiled, target, choices, clock, fraction)
            break
        except MemoryPlanError as exc:
            if _joins_overflowed(exc, target):
                raise   # smaller tiles would not help: plan_tiled joins in DRAM instead
            # The scheduler bounds only its copies' lead by the scratchpads (hetc.schedule.tasks.lead_deps): when
            # the planner cannot place the tiles it scheduled, smaller tiles leave it room. Twice at most.
            if not choices.tiling or fraction < TILE_BUDGET_FRACTION / 3:
                raise
            fraction /= 2
            with clock.stage("memory") as say:
                say(f"{exc.args[0].split(';')[0]}; tiling again with tiles of at most {fraction:.0%} of a "
                    "scratchpad")
    repaired = plan.schedule.makespan_ns / max(1, scheduled.makespan_ns)
    tiled = any(n.tile is not None for n in graph.nodes)   # (no tile: another budget cuts nothing either)
    if tiled and fraction == TILE_BUDGET_FRACTION and repaired > REPAIRED_RETRY:
        graph, plan = _faster_with_wider_tiles(untiled, target, choices, clock, (graph, plan), repaired)
    return graph, plan


def _faster_with_wider_tiles(untiled: Graph, target: Target, choices: SchedulingChoices, clock: StageClock,
                             first: tuple[Graph, MemoryPlan], repaired: float) -> tuple[Graph, MemoryPlan]:
    """``first`` or the plan with tiles of up to ``WIDE_TILE_BUDGET_FRACTION`` of a scratchpad, the faster."""
    with clock.stage("memory") as say:
        say(f"memory planning lengthened the schedule {repaired:.3f}x; tiling again with tiles of at most "
            f"{WIDE_TILE_BUDGET_FRACTION:.0%} of a scratchpad")
    try:
        graph, _, plan = _plan_at(untiled, target, choices, clock, WIDE_TILE_BUDGET_FRACTION, allow_moves=False)
    except MemoryPlanError:
        graph, plan = None, None
    ours = first[1].schedule.makespan_ns
    with clock.stage("memory") as say:
        if plan is not None and plan.schedule.makespan_ns < ours:
            say(f"the wider tiles ship: {plan.schedule.makespan_ns / 1000:,.1f} µs against {ours / 1000:,.1f} µs")
            return graph, plan
        say(f"the tiles of at most {TILE_BUDGET_FRACTION:.0%} ship: {ours / 1000:,.1f} µs"
            + ("" if plan is None else f" against {plan.schedule.makespan_ns / 1000:,.1f} µs"))
    return first


def _plan_at(untiled: Graph, target: Target, choices: SchedulingChoices, clock: StageClock, fraction: float,
             allow_moves: bool = True) -> tuple[Graph, Schedule, MemoryPlan]:
    """Tile with ``fraction`` of a scratchpad per tile, schedule, plan memory: the graph, the scheduler's
    schedule and the plan. Without ``allow_moves`` a plan that would have to move a node off its device (and
    reschedule: the costly repair) fails instead."""
    graph = untiled
    if choices.tiling:
        with clock.stage("tiling") as say:
            graph = tile_graph(untiled, target, fraction)
            say(tiling_note(graph))
    # Split, Slice and in-place Concat as views (after tiling: it cuts the originals)
    graph = alias_ops(graph, target.joins_on_chip)
    with clock.stage("schedule") as say:
        sched = run_scheduler(graph, target, strategy=choices.scheduler, time_limit_s=choices.time_limit_s,
                              num_workers=choices.num_workers, seed=choices.seed, progress=say)
        say(f"{sched.stats.strategy}: makespan {sched.makespan_ns / 1000:,.1f} µs, "
            f"bound {sched.lower_bound_ns / 1000:,.1f} µs, solver gap {sched.gap:.1%} ({sched.stats.status})"
            + (f"; {sched.stats.details['no_search']}" if "no_search" in sched.stats.details else ""))
    with clock.stage("memory") as say:
        plan = plan_memory(graph, sched, target, progress=say, allow_moves=allow_moves)
        plan = _no_worse_than_heft(graph, target, plan, say)
        say(", ".join(f"{m} {s.peak_bytes / 2**20:.2f}/{s.lower_bound_bytes / 2**20:.2f} MiB"
                      for m, s in plan.stats.items())
            + f"; {plan.details['limited_prefetches']} prefetches double-buffered, {spills_note(plan.spills)}; "
              f"makespan {plan.schedule.makespan_ns / 1000:,.1f} µs, "
              f"gap after memory planning {plan.schedule.gap:.1%}" + _overflow_note(plan))
    return graph, sched, plan


def _overflow_note(plan: MemoryPlan) -> str:
    """Where the schedule, as scheduled, needed more than a memory holds (what the repairs above made fit)."""
    over = [f"{m} {s.scheduled_live_bytes / 2**20:.2f}/{s.capacity_bytes / 2**20:.2f} MiB"
            for m, s in plan.stats.items()
            if s.scheduled_live_bytes is not None and s.scheduled_live_bytes > s.capacity_bytes]
    return f"; as scheduled it needed {', '.join(over)}" if over else ""


def _no_worse_than_heft(graph: Graph, target: Target, plan: MemoryPlan, say: Any) -> MemoryPlan:
    """The plan of CP-SAT's schedule, or HEFT's when, planned, HEFT's is faster: the planner may re-time one
    more than the other, and HEFT is the baseline the shipped schedule must beat. Only where CP-SAT shipped a
    schedule of its own (status FEASIBLE or OPTIMAL without ``no_search``; otherwise it is HEFT's already)."""
    stats = plan.schedule.stats
    if stats.strategy != "cpsat" or stats.status not in ("FEASIBLE", "OPTIMAL") or "no_search" in stats.details:
        return plan
    heft_schedule = run_scheduler(graph, target, strategy="heft")
    try:
        heft = plan_memory(graph, heft_schedule, target)
    except MemoryPlanError:
        return plan   # HEFT's schedule does not fit where CP-SAT's does
    if heft.schedule.makespan_ns >= plan.schedule.makespan_ns:
        return plan
    note = (f"HEFT's schedule ships: planned {heft.schedule.makespan_ns / 1000:,.1f} µs against CP-SAT's "
            f"{plan.schedule.makespan_ns / 1000:,.1f} µs")
    say(note)
    own = stats.details.get("solver_own") or {"status": stats.status, "objective_ns": stats.objective_ns,
                                              "gap": round(stats.gap, 6)}
    bound = max(plan.schedule.lower_bound_ns, heft.schedule.lower_bound_ns)
    shipped = replace(stats, status="HINT", objective_ns=heft.schedule.makespan_ns,
                      best_bound_ns=max(stats.best_bound_ns, bound),
                      details={**stats.details, "solver_own": own, "heft_after_planning": note,
                               "scheduled_ns": heft_schedule.makespan_ns})
    return replace(heft, schedule=replace(heft.schedule, stats=shipped, lower_bound_ns=bound))
