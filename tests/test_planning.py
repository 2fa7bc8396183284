"""plan_tiled: the tile budget adjusted on the memory planner's evidence (hetc.planning)."""
from __future__ import annotations

import math

import pytest
from onnx import helper

from hetc import planning
from hetc.errors import MemoryPlanError
from hetc.planning import SchedulingChoices, plan_tiled
from hetc.stages import StageClock
from hetc.target import load_target
from hetc.target.tiling import TILE_BUDGET_FRACTION, WIDE_TILE_BUDGET_FRACTION
from tiler_helpers import load, make_model

CHOICES = SchedulingChoices(scheduler="heft", time_limit_s=None, num_workers=1, seed=0, tiling=True)


@pytest.fixture(scope="module")
def untiled():
    """Two 3x3 convolutions whose activations (3 MiB each) exceed a 2 MiB `multi-npu` core: tiled."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": (1, 64, 112, 112)}, ["y"], {"w1": (64, 64, 3, 3), "w2": (64, 64, 3, 3)})
    target = load_target("multi-npu")
    graph = load(model)
    return target, graph


def _tiles(graph) -> int:
    return sum(1 for n in graph.nodes if n.tile is not None)


def test_the_wider_budget_is_tried_when_repairs_lengthen_the_schedule(untiled, monkeypatch) -> None:
    """With the threshold at 0 every tiled build tries both budgets: the faster plan ships, with its graph."""
    target, graph = untiled
    plans = {f: planning._plan_at(graph, target, CHOICES, StageClock(), f)
             for f in (TILE_BUDGET_FRACTION, WIDE_TILE_BUDGET_FRACTION)}
    assert _tiles(plans[TILE_BUDGET_FRACTION][0]) != _tiles(plans[WIDE_TILE_BUDGET_FRACTION][0])
    fastest = min(plans.values(), key=lambda p: p[2].schedule.makespan_ns)
    monkeypatch.setattr(planning, "REPAIRED_RETRY", 0.0)
    clock = StageClock()
    shipped_graph, plan = plan_tiled(graph, target, CHOICES, clock)
    assert plan.schedule.makespan_ns == fastest[2].schedule.makespan_ns
    assert _tiles(shipped_graph) == _tiles(fastest[0])
    assert "ship" in clock._details["memory"]
    monkeypatch.setattr(planning, "REPAIRED_RETRY", math.inf)    # never: the first budget's plan ships
    first = plans[TILE_BUDGET_FRACTION]
    shipped_graph, plan = plan_tiled(graph, target, CHOICES, StageClock())
    assert plan.schedule.makespan_ns == first[2].schedule.makespan_ns and _tiles(shipped_graph) == _tiles(first[0])


def test_a_wider_budget_the_planner_cannot_place_leaves_the_first_plan(untiled, monkeypatch) -> None:
    target, graph = untiled
    real = planning._plan_at

    def failing_wide(untiled_graph, tgt, choices, clock, fraction, allow_moves=True):
        if fraction == WIDE_TILE_BUDGET_FRACTION:
            assert not allow_moves      # the try never pays for moving nodes
            raise MemoryPlanError("memory 'npu0_spm' overflows")
        return real(untiled_graph, tgt, choices, clock, fraction, allow_moves)

    monkeypatch.setattr(planning, "_plan_at", failing_wide)
    monkeypatch.setattr(planning, "REPAIRED_RETRY", 0.0)
    clock = StageClock()
    _, plan = plan_tiled(graph, target, CHOICES, clock)
    first = real(graph, target, CHOICES, StageClock(), TILE_BUDGET_FRACTION)[2]
    assert plan.schedule.makespan_ns == first.schedule.makespan_ns
    assert "ship" in clock._details["memory"]


def test_an_untiled_graph_is_planned_once(monkeypatch) -> None:
    """Nothing was cut: another tile budget would cut nothing either, so it is not tried."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = load(make_model(nodes, {"x": (1, 8, 16, 16)}, ["y"], {"w": (8, 8, 3, 3)}))
    calls = []
    real = planning._plan_at
    monkeypatch.setattr(planning, "_plan_at", lambda *a, **k: calls.append(a[-1]) or real(*a, **k))
    monkeypatch.setattr(planning, "REPAIRED_RETRY", 0.0)
    shipped, _ = plan_tiled(graph, load_target("edge-soc"), CHOICES, StageClock())
    assert _tiles(shipped) == 0 and calls == [TILE_BUDGET_FRACTION]
