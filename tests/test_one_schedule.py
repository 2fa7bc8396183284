"""One schedule leaves the memory stage (issue 15, item 2): ``BuildResult.schedule`` is the plan's, the one
emitted, simulated and reported; its statistics describe it (objective = its makespan, gap against the same
bound) and the solver's own figures, when memory planning re-timed them, are kept and reported apart."""
from __future__ import annotations

import warnings

from hetc.pipeline import BuildOptions, build
from hetc.schedule.artifact import SolverStats
from hetc.target import load_target, target_from_toml_text

from test_sim_support import REPO


def test_shipped_statistics_recompute_the_gap_against_the_same_bound():
    solver = SolverStats("cpsat", "OPTIMAL", 100, 100, 1.5, 1, {"seed": 0})
    assert solver.shipped(100) is solver                       # not re-timed: nothing to say
    shipped = solver.shipped(125)
    assert (shipped.objective_ns, shipped.best_bound_ns, shipped.wall_s) == (125, 100, 1.5)
    assert shipped.gap == 0.2 and shipped.status == "FEASIBLE"  # no longer proven optimal
    assert shipped.details == {"seed": 0, "solver_own": {"status": "OPTIMAL", "objective_ns": 100, "gap": 0.0}}
    assert shipped.shipped(130).details["solver_own"]["objective_ns"] == 100   # the solver's own, not an interim


def test_a_build_whose_plan_re_times_carries_one_schedule():
    target = load_target("edge-soc")   # a 160 KiB NPU scratchpad: U-Net's activations spill
    small = target_from_toml_text(target.source.replace('size = "8MiB"', 'size = "160KiB"'), "small")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build(REPO / "models" / "unet.onnx", BuildOptions(target=small, scheduler="heft"))
    sched = result.schedule
    assert sched is result.plan.schedule and result.plan.spills
    assert sched.stats.objective_ns == sched.makespan_ns
    own = sched.stats.details["solver_own"]
    assert own["objective_ns"] < sched.makespan_ns
    solver = result.summary["solver"]
    assert solver["makespan_us"] == result.summary["makespan_us"] == sched.makespan_ns / 1000
    assert solver["gap"] == result.summary["gap"] > own["gap"] == solver["own"]["gap"]
    assert solver["own"]["makespan_us"] == own["objective_ns"] / 1000
    shipped = result.bundle.schedule()                         # schedule.json: the same schedule, same stats
    assert shipped.tasks == sched.tasks and shipped.stats.objective_ns == sched.makespan_ns
    report = result.bundle.report
    assert "solver's own makespan" in report and f"{own['objective_ns'] / 1000:,.2f} µs" in report


def test_where_heft_s_plan_ships_the_summary_says_so_and_measures_its_re_timing_from_heft_s_schedule():
    # A slower schedule posing as CP-SAT's (everything on the CPU), planned: HEFT's plan is faster and ships.
    from dataclasses import replace

    from hetc.frontend import load_onnx
    from hetc.memory import plan_memory
    from hetc.pipeline import make_summary
    from hetc.planning import _no_worse_than_heft
    from hetc.report.summary_view import summary_text
    from hetc.schedule import schedule as run_scheduler
    from hetc.stages import StageClock

    target = load_target("edge-soc")
    graph = load_onnx(REPO / "models" / "tiny_cnn.onnx")
    slow = run_scheduler(graph, target, strategy="single:cpu")
    posing = replace(slow, stats=replace(slow.stats, strategy="cpsat", status="FEASIBLE"))
    heard: list[str] = []
    plan = _no_worse_than_heft(graph, target, plan_memory(graph, posing, target), heard.append)
    heft = run_scheduler(graph, target, strategy="heft")
    assert plan.schedule.placement == heft.placement and heard[0].startswith("HEFT's schedule ships")
    summary = make_summary("tiny_cnn", graph, target, plan, StageClock())
    solver = summary["solver"]
    assert solver["own"]["makespan_us"] == posing.makespan_ns / 1000 and solver["own"]["superseded"] == heard[0]
    assert solver["scheduled_us"] == heft.makespan_ns / 1000          # the shipped schedule's own, not CP-SAT's
    assert heard[0] in summary_text(summary) and "before memory planning re-timed it" not in summary_text(summary)


def test_a_schedule_heft_made_optimal_is_not_planned_again_as_heft_s(monkeypatch):
    # CP-SAT did not search (HEFT meets the bound): the plan is HEFT's already, so no second memory plan
    from dataclasses import replace

    import hetc.planning as planning
    from hetc.frontend import load_onnx
    from hetc.memory import plan_memory
    from hetc.schedule import schedule as run_scheduler

    target = load_target("edge-soc")
    graph = load_onnx(REPO / "models" / "tiny_cnn.onnx")
    heft = run_scheduler(graph, target, strategy="heft")
    optimal = replace(heft, stats=replace(heft.stats, strategy="cpsat", status="OPTIMAL",
                                          details={"no_search": "HEFT meets the lower bound"}))
    plan = plan_memory(graph, optimal, target)

    def refuse(*args, **kwargs):
        raise AssertionError("HEFT's schedule planned a second time")

    monkeypatch.setattr(planning, "plan_memory", refuse)
    heard: list[str] = []
    assert planning._no_worse_than_heft(graph, target, plan, heard.append) is plan and not heard
