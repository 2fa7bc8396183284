"""plan_memory tries the plan without double buffering where double buffering alone cost much, and ships the
faster (hetc.memory.planner.DOUBLE_BUFFER_RETRY)."""
from __future__ import annotations

import math
from pathlib import Path

import onnx
import pytest

from hetc.frontend import load_onnx
from hetc.memory import planner
from hetc.passes import optimize
from hetc.passes.alias_ops import alias_ops
from hetc.schedule import schedule as run_scheduler
from hetc.target import load_target
from hetc.target.lowering import lowering_rules
from hetc.target.tiling import tile_graph

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.fixture(scope="module")
def scheduled():
    """Inception v1 on `edge-soc`, tiled, HEFT: double buffering limits 53 prefetches and costs 1.6%. (On
    `multi-npu` it limited 35 and cost 1.5% until split outputs joined in the L2: none now.)"""
    target = load_target("edge-soc")
    graph = optimize(load_onnx(LIGHT / "light_inception_v1.onnx"), lowerings=lowering_rules(target))
    graph = alias_ops(tile_graph(graph, target))
    return graph, run_scheduler(graph, target, strategy="heft"), target


def test_the_faster_of_the_two_plans_ships(scheduled, monkeypatch) -> None:
    graph, schedule, target = scheduled
    with_it, without = (planner._plan_memory(graph, schedule, target, None, True, None, double_buffer=flag)
                        for flag in (True, False))
    assert with_it.details["limited_prefetches"] > 0 and without.details["limited_prefetches"] == 0
    cost = with_it.details["double_buffered_ns"] / schedule.makespan_ns
    assert cost > planner.DOUBLE_BUFFER_RETRY           # this case tries both by default
    fastest = min(with_it.schedule.makespan_ns, without.schedule.makespan_ns)
    assert planner.plan_memory(graph, schedule, target).schedule.makespan_ns == fastest
    monkeypatch.setattr(planner, "DOUBLE_BUFFER_RETRY", math.inf)    # never: double buffering's plan ships
    assert planner.plan_memory(graph, schedule, target).schedule.makespan_ns == with_it.schedule.makespan_ns


def test_a_plan_without_double_buffering_is_verified(scheduled) -> None:
    graph, schedule, target = scheduled
    plan = planner._plan_memory(graph, schedule, target, None, True, None, double_buffer=False)
    plan.verify(target)                  # no overlap in time and address, every task's buffers in place
    plan.schedule.verify(graph, target)
