"""The build ships CP-SAT's schedule only if, after memory planning, it is no slower than HEFT's."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hetc.frontend import load_onnx
from hetc.memory import plan_memory
from hetc.passes import optimize
from hetc.planning import _no_worse_than_heft
from hetc.schedule import schedule
from hetc.target import load_target

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_a_slower_plan_than_heft_ships_heft_with_the_reason():
    target = load_target("edge-soc")
    graph = optimize(load_onnx(str(MODELS / "tiny_cnn.onnx")))
    # a schedule labelled as CP-SAT's own that is plainly worse than HEFT's: everything on the CPU
    slow = schedule(graph, target, strategy="single:cpu")
    slow = replace(slow, stats=replace(slow.stats, strategy="cpsat", status="FEASIBLE"))
    plan = plan_memory(graph, slow, target)
    notes: list[str] = []
    shipped = _no_worse_than_heft(graph, target, plan, notes.append)
    heft = plan_memory(graph, schedule(graph, target, strategy="heft"), target)
    assert shipped.schedule.makespan_ns == heft.schedule.makespan_ns < plan.schedule.makespan_ns
    stats = shipped.schedule.stats
    assert stats.strategy == "cpsat" and stats.status == "HINT" and stats.objective_ns == heft.schedule.makespan_ns
    assert notes and "HEFT's schedule ships" in stats.details["heft_after_planning"]
    # a plan at least as fast as HEFT's, or HEFT's own, ships as it is
    assert _no_worse_than_heft(graph, target, heft, notes.append) is heft
    faster = replace(heft, schedule=replace(heft.schedule, stats=replace(heft.schedule.stats, strategy="cpsat",
                                                                         status="FEASIBLE")))
    assert _no_worse_than_heft(graph, target, faster, notes.append) is faster
