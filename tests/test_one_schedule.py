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
