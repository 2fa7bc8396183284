"""Scheduling the real light models on the preset targets (fast solver settings)."""
from __future__ import annotations

from functools import lru_cache

import pytest
from conftest import LIGHT_MODELS, light_model_path

from hetc.frontend import load_onnx
from hetc.ir import Graph
from hetc.passes import optimize
from hetc.schedule import placement_rows, schedule
from hetc.target import load_target


@lru_cache(maxsize=None)
def model(name: str) -> Graph:
    return optimize(load_onnx(light_model_path(name)))


@pytest.mark.parametrize("target_name", ["edge-soc", "multi-npu"])
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_schedule_and_verify(name: str, target_name: str) -> None:
    graph, target = model(name), load_target(target_name)
    runs = {s: schedule(graph, target, s, time_limit_s=0.3)
            for s in ("heft", "greedy", "single:cpu", "cpsat")}
    for strategy, sched in runs.items():
        sched.verify(graph, target)
        assert 0 < sched.lower_bound_ns <= sched.makespan_ns, strategy
    assert runs["cpsat"].makespan_ns <= runs["heft"].makespan_ns
    assert runs["cpsat"].makespan_ns <= runs["single:cpu"].makespan_ns
    assert runs["heft"].makespan_ns <= runs["single:cpu"].makespan_ns
    rows = placement_rows(graph, target, runs["cpsat"])
    assert len(rows) == len(graph.nodes)
    assert all(r["reason"] for r in rows if r["cost_us"] > r["fastest_cost_us"])
