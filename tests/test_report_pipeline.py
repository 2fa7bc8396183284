"""Reports on artifacts made by the real stages: import, passes, scheduler, memory planner, codegen,
simulator, validation.

Most tests schedule with the reference planner of the tests (``tests/handplan.py``: fast and
placement-controlled); one uses ``hetc.schedule.schedule`` itself."""
from __future__ import annotations

from pathlib import Path

import pytest

from hetc.codegen import emit
from hetc.frontend import load_onnx
from hetc.memory import plan_memory
from hetc.passes import optimize
from hetc.report import GANTT_FORMATS, EXTENSIONS, Timeline, export_gantt, numerics_table, report_text
from hetc.report.tables import fmt_bytes
from hetc.schedule import schedule as run_scheduler
from hetc.sim import random_inputs, simulate
from handplan import cost_duration, first_candidate_placement, plan_by_hand
from hetc.target import load_target
from trace_checker import assert_valid_trace, load_trace

MODELS = Path(__file__).resolve().parent.parent / "models"


def _compile(model: str, schedule_fn=None):
    graph = optimize(load_onnx(MODELS / f"{model}.onnx"))
    target = load_target("edge-soc")
    if schedule_fn is None:
        schedule = plan_by_hand(graph, target, first_candidate_placement(graph, target), cost_duration(target)).schedule
    else:
        schedule = schedule_fn(graph, target, strategy="heft")
    plan = plan_memory(graph, schedule, target)
    return graph, target, plan


@pytest.mark.parametrize("model", ["tiny_cnn", "gpt_decoder"])
def test_every_format_from_real_artifacts(model, tmp_path):
    graph, target, plan = _compile(model)
    sim = simulate(emit(graph, plan, target), functional=False)
    planned = Timeline.from_schedule(plan.schedule, graph, plan, target)
    simulated = Timeline.from_simulation(sim, plan.schedule, plan, target, title=graph.name)
    for timeline in (planned, simulated):
        assert [lane.engine for lane in timeline.lanes if lane.group == "compute"] == list(target.devices)
        assert {lane.engine for lane in timeline.lanes if lane.group == "dma"} == set(target.dmas)
        for fmt in GANTT_FORMATS:
            path = export_gantt(timeline, fmt, tmp_path / f"{timeline.source}{EXTENSIONS[fmt]}")
            assert path.stat().st_size > 1000
        assert_valid_trace(load_trace(tmp_path / f"{timeline.source}.json"), makespan_us=timeline.makespan_us)
    assert len(simulated.slices) == len(plan.schedule.tasks)
    assert simulated.flows  # the codegen's semaphores show up as arrows
    # Every memory gets a panel (unused ones too), and the simulator's occupancy never exceeds what the
    # planner reserved in it.
    for timeline in (planned, simulated):
        assert {m.memory for m in timeline.memories} == set(target.memories)
        assert timeline.memories[-1].memory == target.dram
    for series in simulated.memories:
        reserved = plan.stats[series.memory].peak_bytes if series.memory in plan.stats else 0
        assert series.max_bytes <= reserved


def test_report_text_with_real_validation():
    from hetc.validate import compare
    from hetc.validate.reference import reference_outputs
    graph, target, plan = _compile("tiny_cnn")
    bundle = emit(graph, plan, target)
    inputs = random_inputs(bundle)
    sim = simulate(bundle, inputs, functional=True)
    report = compare(sim.outputs, reference_outputs(MODELS / "tiny_cnn.onnx", inputs))
    text = report_text(plan.schedule, graph, plan, target, sim, numerics=report)
    n = len(report.outputs)
    assert report.passed and f"{n}/{n} outputs within tolerance" in text
    assert str(numerics_table(report)).count("ok") == len(report.outputs)
    for node in graph.nodes:
        assert node.name in text


def test_real_scheduler_output_exports(tmp_path):
    graph, target, plan = _compile("tiny_cnn", run_scheduler)
    timeline = Timeline.from_schedule(plan.schedule, graph, plan, target)
    path = export_gantt(timeline, "perfetto", tmp_path / "trace.json")
    assert_valid_trace(load_trace(path), makespan_us=timeline.makespan_us)


def _spilling_plan(graph, base):
    """Shrink the NPU scratchpad step by step until the real planner spills (how small that must be depends
    on the planner's cleverness, so no single size is hard-coded). The schedule is made for the base target's
    scratchpad, whose lead the smaller one cannot hold (hetc.schedule.tasks.lead_deps)."""
    from dataclasses import replace

    from hetc.errors import MemoryPlanError
    for kib in (1024, 768, 640, 512, 448, 384, 320, 256):
        small = replace(base.memories["npu_sram"], size=kib << 10)
        target = replace(base, memories={**base.memories, "npu_sram": small}, _cache={})
        placement = first_candidate_placement(graph, target)
        schedule = plan_by_hand(graph, base, placement, cost_duration(target)).schedule
        try:
            plan = plan_memory(graph, schedule, target)
        except MemoryPlanError:
            continue
        if plan.spills:
            return target, plan
    pytest.fail("no NPU scratchpad size between 256 KiB and 1 MiB made the planner spill")


def test_spill_traffic_is_labelled_and_occupancy_stays_under_capacity(tmp_path):
    """A real planner spill: spill transfers are named as such, and the occupancy panel stays under the (now
    visible) capacity line."""
    graph = optimize(load_onnx(MODELS / "gpt_decoder.onnx"))
    target, plan = _spilling_plan(graph, load_target("edge-soc"))
    timeline = Timeline.from_schedule(plan.schedule, graph, plan, target)
    spill_tasks = ({s.evict_task for s in plan.spills} | {s.reload_task for s in plan.spills}) - {None}
    labelled = {s.id for s in timeline.slices if s.name.startswith("spill: ")}
    assert labelled == spill_tasks
    assert all(timeline.slice_by_id()[i].args["spill"].split()[0] in ("evict", "reload") for i in labelled)
    npu = next(m for m in timeline.memories if m.memory == "npu_sram")
    assert npu.capacity_bytes == target.memories["npu_sram"].size and 0 < npu.max_bytes <= npu.capacity_bytes
    texts = export_gantt(timeline, "svg", tmp_path / "spill.svg").read_text()
    assert "capacity " + fmt_bytes(npu.capacity_bytes, 1) in texts
    simulated = Timeline.from_simulation(simulate(emit(graph, plan, target), functional=False), plan=plan,
                                         target=target)
    assert {s.args["task"] for s in simulated.slices if s.name.startswith("spill: ")} == spill_tasks
