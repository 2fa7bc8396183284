"""plan_memory tries the plans that limit only the excess prefetches, every one to a wider lead, and none where
double buffering every crowded one alone cost much, and ships the fastest (hetc.memory.planner.DOUBLE_BUFFER_RETRY)."""
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


def test_the_fastest_of_the_four_plans_ships(scheduled, monkeypatch) -> None:
    graph, schedule, target = scheduled
    plans = [planner._plan_memory(graph, schedule, target, None, limit != "every", None, limit)
             for limit in ("every", "excess", "wider", "none")]
    every, excess, wider, none = plans
    assert 0 < excess.details["limited_prefetches"] < every.details["limited_prefetches"]
    assert 0 < wider.details["limited_prefetches"] <= every.details["limited_prefetches"]
    assert none.details["limited_prefetches"] == 0
    cost = every.details["double_buffered_ns"] / schedule.makespan_ns
    assert cost > planner.DOUBLE_BUFFER_RETRY           # this case tries all four by default
    fastest = min(p.schedule.makespan_ns for p in plans)
    shipped = planner.plan_memory(graph, schedule, target)
    assert shipped.schedule.makespan_ns == fastest
    assert shipped.details["prefetch_limit"] == next(p.details["prefetch_limit"] for p in plans
                                                     if p.schedule.makespan_ns == fastest)
    monkeypatch.setattr(planner, "DOUBLE_BUFFER_RETRY", math.inf)    # never: double buffering's plan ships
    assert planner.plan_memory(graph, schedule, target).schedule.makespan_ns == every.schedule.makespan_ns


@pytest.mark.parametrize("limit", ["excess", "wider", "none"])
def test_a_plan_with_fewer_prefetches_limited_is_verified(scheduled, limit) -> None:
    graph, schedule, target = scheduled
    plan = planner._plan_memory(graph, schedule, target, None, True, None, limit)
    plan.verify(target)                  # no overlap in time and address, every task's buffers in place
    plan.schedule.verify(graph, target)


def test_a_wider_lead_releases_a_prefetch_at_the_compute_that_many_before_its_reader(scheduled) -> None:
    from hetc.memory.aliasing import resolve_aliases
    from hetc.memory.layout import crowded_stretches, group_storages
    from hetc.memory.lifetimes import build_table
    from hetc.memory.prefetch import limit_prefetch

    graph, schedule, target = scheduled
    table = build_table(graph, schedule, target)
    storages = group_storages(table, table.lifetimes(schedule), resolve_aliases(table, schedule, graph.node_map()))
    crowded = {name: crowded_stretches(storages, name, memory, memory.size)
               for name, memory in target.memories.items() if name != target.dram}
    lanes = {e: [t.id for t in ts] for e, ts in schedule.engine_tasks().items()}
    readers = {t.id: [w for w in schedule.tasks if t.id in w.deps] for t in schedule.tasks}
    moved_by = {}
    for lead in (1, planner.WIDER_LEAD):
        limited, moved = limit_prefetch(schedule, target, crowded, lead=lead)
        moved_by[lead] = moved
        for copy in moved:
            reader = min(readers[copy], key=lambda w: (w.start_ns, w.id))
            lane = lanes[reader.engine]
            released = schedule.task(lane[lane.index(reader.id) - lead]).start_ns
            assert released > schedule.task(copy).start_ns            # it was further ahead than that
            assert limited.task(copy).start_ns >= released             # and now waits for that compute
    assert moved_by[planner.WIDER_LEAD] and moved_by[planner.WIDER_LEAD] <= moved_by[1]
