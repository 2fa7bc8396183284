"""Perfetto / Chrome trace export, checked by tests/trace_checker.py on planned and simulated timelines."""
from __future__ import annotations

from dataclasses import replace
import json

import pytest

from hetc.report import Timeline, export_gantt, to_trace_events
from hetc.report.perfetto import MEMORY_PID, PIDS
from test_report_artifacts import make_all
from trace_checker import assert_valid_trace, check_trace, load_trace


@pytest.fixture(scope="module")
def artifacts():
    return make_all(30)


def _timelines(artifacts):
    graph, target, schedule, plan, sim = artifacts
    return {"planned": Timeline.from_schedule(schedule, graph, plan, target),
            "planned-bare": Timeline.from_schedule(schedule, graph),
            "simulated": Timeline.from_simulation(sim, schedule, plan, target),
            "simulated-bare": Timeline.from_simulation(sim)}


@pytest.mark.parametrize("which", ["planned", "planned-bare", "simulated", "simulated-bare"])
def test_traces_of_every_timeline_pass_the_checker(artifacts, which, tmp_path):
    timeline = _timelines(artifacts)[which]
    path = export_gantt(timeline, "perfetto", tmp_path / "trace.json")
    trace = load_trace(path)
    assert_valid_trace(trace, makespan_us=timeline.makespan_us)
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == len(timeline.slices)
    flows = [e for e in trace["traceEvents"] if e["ph"] in "sf"]
    assert len(flows) == 2 * len(timeline.flows) > 0


def test_one_thread_per_engine_in_two_processes(artifacts):
    graph, target, schedule, plan, sim = artifacts
    trace = to_trace_events(Timeline.from_schedule(schedule, graph, plan, target))
    names = {(e["pid"], e["args"]["name"]) for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert {n.split(" ")[0] for pid, n in names if pid == PIDS["compute"]} == set(target.devices)
    assert {n.split(" ")[0] for pid, n in names if pid == PIDS["dma"]} == set(target.dmas)
    processes = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert processes == {"Compute devices", "DMA engines", "Memory"}


def test_slices_carry_op_details_and_both_start_times(artifacts):
    graph, target, schedule, plan, sim = artifacts
    trace = to_trace_events(Timeline.from_simulation(sim, schedule, plan, target))
    convs = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "conv"]
    assert convs and all(e["args"]["op"] == "Conv" for e in convs)
    for e in convs:
        assert e["args"]["simulated_start_us"] == pytest.approx(e["ts"], abs=1e-3)
        assert "planned_start_us" in e["args"]
    dma = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "dma"]
    assert dma and all(e["args"]["bytes"] > 0 for e in dma)


def test_memory_counters_follow_the_plan(artifacts):
    graph, target, schedule, plan, sim = artifacts
    trace = to_trace_events(Timeline.from_schedule(schedule, graph, plan, target))
    counters = [e for e in trace["traceEvents"] if e["ph"] == "C" and e["pid"] == MEMORY_PID]
    for memory, stats in plan.stats.items():
        live = [e["args"]["bytes"] for e in counters if e["name"] == f"{memory} live bytes"]
        assert max(live) == stats.lower_bound_bytes  # the live-bytes peak *is* the planner's lower bound
        cap = {e["args"]["bytes"] for e in counters if e["name"] == f"{memory} capacity"}
        assert cap == {stats.capacity_bytes}


def test_overlapping_slices_go_to_an_overflow_thread(artifacts):
    """A (buggy) schedule with two tasks at once on one engine still yields a well-formed trace, and the
    clash is visible as an extra "[overlap]" thread instead of a malformed one."""
    graph, target, schedule, plan, sim = artifacts
    timeline = Timeline.from_schedule(schedule, graph, target=target)
    a, b = [s for s in timeline.slices if s.engine == "npu"][:2]
    clash = replace(b, start_us=a.start_us + a.dur_us / 2, end_us=a.end_us + 1.0)
    # Flows are dropped: moving a slice earlier would also (rightly) fail the flow-order rule.
    broken = replace(timeline, slices=tuple(clash if s.id == b.id else s for s in timeline.slices), flows=())
    trace = to_trace_events(broken)
    assert_valid_trace(trace)
    assert any("[overlap" in e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name")


# ---------------------------------------------------------------------------------------------- the checker
def _good_trace(artifacts) -> dict:
    graph, target, schedule, plan, sim = artifacts
    return json.loads(json.dumps(to_trace_events(Timeline.from_schedule(schedule, graph, plan, target))))


def _first(trace: dict, ph: str) -> dict:
    return next(e for e in trace["traceEvents"] if e["ph"] == ph)


@pytest.mark.parametrize("breakage, message", [
    (lambda t: _first(t, "X").update(pid="1"), "'pid' must be an integer"),
    (lambda t: _first(t, "X").update(dur=-1.0), "non-negative"),
    (lambda t: t["traceEvents"].remove(_first(t, "f")), "1 start(s) and 0 finish(es)"),
    (lambda t: _first(t, "f").pop("bp"), "bp"),
    (lambda t: t.pop("displayTimeUnit"), "displayTimeUnit"),
    (lambda t: t.update(traceEvents=[e for e in t["traceEvents"] if e.get("name") != "thread_name"]),
     "no thread_name"),
    (lambda t: _first(t, "s").update(ts=-5.0), "not inside a slice"),
    (lambda t: _first(t, "C").update(args={"bytes": "lots"}), "counter args"),
])
def test_checker_catches_each_rule(artifacts, breakage, message):
    trace = _good_trace(artifacts)
    assert check_trace(trace) == []
    breakage(trace)
    problems = check_trace(trace)
    assert any(message in p for p in problems), problems


def test_checker_catches_partial_overlap_and_wrong_units(artifacts):
    trace = _good_trace(artifacts)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == PIDS["compute"] and e["tid"] == 2]
    xs[1]["ts"] = xs[0]["ts"] + xs[0]["dur"] / 2
    xs[1]["dur"] = xs[0]["dur"] * 4
    assert any("partially overlaps" in p for p in check_trace(trace))
    makespan_us = artifacts[2].makespan_ns / 1000
    assert any("wrong time unit" in p for p in check_trace(_good_trace(artifacts), makespan_us * 1000))
    assert check_trace(_good_trace(artifacts), makespan_us) == []
