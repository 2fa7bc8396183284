"""plan_memory tries the plans that limit only the excess prefetches and none where double buffering every
crowded one alone cost much, and ships the fastest (hetc.memory.planner.DOUBLE_BUFFER_RETRY)."""
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


def test_the_fastest_of_the_three_plans_ships(scheduled, monkeypatch) -> None:
    graph, schedule, target = scheduled
    every, excess, none = (planner._plan_memory(graph, schedule, target, None, limit != "every", None, limit)
                           for limit in ("every", "excess", "none"))
    assert 0 < excess.details["limited_prefetches"] < every.details["limited_prefetches"]
    assert none.details["limited_prefetches"] == 0
    cost = every.details["double_buffered_ns"] / schedule.makespan_ns
    assert cost > planner.DOUBLE_BUFFER_RETRY           # this case tries all three by default
    fastest = min(p.schedule.makespan_ns for p in (every, excess, none))
    shipped = planner.plan_memory(graph, schedule, target)
    assert shipped.schedule.makespan_ns == fastest
    assert shipped.details["prefetch_limit"] == next(p.details["prefetch_limit"] for p in (every, excess, none)
                                                     if p.schedule.makespan_ns == fastest)
    monkeypatch.setattr(planner, "DOUBLE_BUFFER_RETRY", math.inf)    # never: double buffering's plan ships
    assert planner.plan_memory(graph, schedule, target).schedule.makespan_ns == every.schedule.makespan_ns


@pytest.mark.parametrize("limit", ["excess", "none"])
def test_a_plan_with_fewer_prefetches_limited_is_verified(scheduled, limit) -> None:
    graph, schedule, target = scheduled
    plan = planner._plan_memory(graph, schedule, target, None, True, None, limit)
    plan.verify(target)                  # no overlap in time and address, every task's buffers in place
    plan.schedule.verify(graph, target)
