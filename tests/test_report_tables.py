"""Timeline semantics, text tables, the build summary view, and export_gantt's errors."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
from rich.console import Console

from hetc.errors import HetcError
from hetc.report import (Timeline, export_gantt, gantt_bytes, gantt_files, makespan_table, memory_table,
                         numerics_table, placement_table, render_summary, report_text, solver_table, summary_text,
                         utilisation_table)
from test_report_artifacts import SYNC_NS, make_all


@pytest.fixture(scope="module")
def artifacts():
    return make_all(20)


# ---------------------------------------------------------------------------------------------- timeline
def test_planned_timeline_mirrors_the_schedule(artifacts):
    graph, target, schedule, plan, sim = artifacts
    timeline = Timeline.from_schedule(schedule, graph, plan, target)
    assert [lane.engine for lane in timeline.lanes] == ["cpu", "npu", "dsp", "dma_npu", "dma_dsp", "dma_x"]
    assert len(timeline.slices) == len(schedule.tasks)
    assert timeline.makespan_us == schedule.makespan_ns / 1000
    cross = {(d, t.id) for t in schedule.tasks for d in t.deps if schedule.task(d).engine != t.engine}
    assert {(f.src, f.dst) for f in timeline.flows} == cross
    by_id = timeline.slice_by_id()
    for f in timeline.flows:  # a semaphore dependency always leaves room for the sync cost
        assert by_id[f.dst].start_us >= by_id[f.src].end_us + SYNC_NS / 1000 - 1e-9
    busy = timeline.busy_us()
    for engine, tasks in schedule.engine_tasks().items():
        assert busy[engine] == pytest.approx(sum(t.duration_ns for t in tasks) / 1000)


def test_planned_timeline_without_the_graph(artifacts):
    """``hetc gantt BUNDLE`` has the schedule, plan and target but not the model: slices fall back to op#node."""
    graph, target, schedule, plan, sim = artifacts
    timeline = Timeline.from_schedule(schedule, None, plan, target)
    conv = next(s for s in timeline.slices if s.args.get("op") == "Conv")
    assert conv.name == f"Conv#{conv.args['node']}" and "inputs" not in conv.args
    assert len(timeline.flows) == len(Timeline.from_schedule(schedule, graph, plan, target).flows)
    assert "Placement by node" in report_text(schedule, None, plan, target, sim)


def test_simulated_timeline_maps_semaphores_to_tasks(artifacts):
    graph, target, schedule, plan, sim = artifacts
    timeline = Timeline.from_simulation(sim, schedule, plan, target)
    assert len(timeline.slices) == sum(e.kind in ("compute", "dma") for e in sim.events)
    assert len(timeline.flows) == len(sim.sync_edges)
    by_id = timeline.slice_by_id()
    tasks = {f: (by_id[f.src].args["task"], by_id[f.dst].args["task"]) for f in timeline.flows}
    deps = {(d, t.id) for t in schedule.tasks for d in t.deps}
    assert set(tasks.values()) <= deps  # every arrow joins a real producer to its consumer
    assert timeline.makespan_us == pytest.approx(sim.makespan_ns / 1000)
    assert timeline.planned_makespan_us == pytest.approx(schedule.makespan_ns / 1000)


def test_spill_transfers_are_named_in_both_timelines(artifacts):
    from dataclasses import replace

    from hetc.memory.artifact import Spill
    graph, target, schedule, plan, sim = artifacts
    evict, reload = [t for t in schedule.tasks if t.kind == "transfer"][:2]
    spilled = replace(plan, spills=(Spill(evict.value, "npu_sram", "dram", evict.bytes, evict.id, reload.id),))
    for timeline in (Timeline.from_schedule(schedule, graph, spilled, target),
                     Timeline.from_simulation(sim, schedule, spilled, target)):
        named = {s.args["task"]: s for s in timeline.slices if s.name.startswith("spill: ")}
        assert set(named) == {evict.id, reload.id}
        assert named[evict.id].args["spill"] == "evict from npu_sram"
        assert named[reload.id].args["spill"] == "reload into npu_sram"


def test_occupancy_ignores_aliases(artifacts):
    from dataclasses import replace
    graph, target, schedule, plan, sim = artifacts
    base = {m.memory: m.max_bytes for m in Timeline.from_schedule(schedule, graph, plan, target).memories}
    victim = next(b for b in plan.buffers if b.memory == "npu_sram")
    aliased = replace(plan, buffers=tuple(replace(b, alias_of="x@npu_sram") if b is victim else b
                                          for b in plan.buffers))
    after = {m.memory: m.max_bytes for m in Timeline.from_schedule(schedule, graph, aliased, target).memories}
    assert after["npu_sram"] <= base["npu_sram"] and after["dram"] == base["dram"]


# ---------------------------------------------------------------------------------------------- tables
def test_placement_table_lists_every_node_with_reasons(artifacts):
    graph, target, schedule, plan, sim = artifacts
    table = placement_table(schedule, graph, target)
    assert [int(r[0]) for r in table.rows] == sorted(schedule.placement, key=lambda n: (
        next(t.start_ns for t in schedule.tasks if t.node == n), n))
    for row in table.rows:
        if row[2] == "Softmax":  # on the CPU because the DSP has no Softmax kernel: the table says so
            assert row[3] == "cpu" and "dsp:" in row[6] and "Softmax" in row[6]
        if row[3] == "dsp":
            assert row[6] == ""
    assert str(table).count("\n") > len(graph.nodes) and "placement: npu" in str(table)


def test_utilisation_and_makespan_tables(artifacts):
    graph, target, schedule, plan, sim = artifacts
    util = utilisation_table(Timeline.from_schedule(schedule, graph, plan, target))
    assert [r[0] for r in util.rows] == ["cpu", "npu", "dsp", "dma_npu", "dma_dsp", "dma_x"]
    assert all(0 < float(r[4].rstrip("%")) <= 100 for r in util.rows)
    simulated = utilisation_table(Timeline.from_simulation(sim, schedule, plan, target))
    waits = {e.engine: 0.0 for e in sim.events}
    for e in sim.events:
        waits[e.engine] += (e.end_ns - e.start_ns) / 1000 if e.kind == "wait" else 0.0
    assert simulated.columns[-1] == "waiting µs"
    assert {r[0]: float(r[5]) for r in simulated.rows} == pytest.approx(waits, abs=0.01)
    assert any(float(r[5]) > 0 for r in simulated.rows)
    table = makespan_table(schedule, sim)
    planned, simulated, bound = table.rows
    assert float(planned[1].replace(",", "")) == pytest.approx(schedule.makespan_ns / 1000, abs=0.01)
    assert float(simulated[1].replace(",", "")) == pytest.approx(sim.makespan_ns / 1000, abs=0.01)
    assert simulated[3].startswith("+")


def test_memory_and_solver_tables(artifacts):
    graph, target, schedule, plan, sim = artifacts
    mem = memory_table(plan)
    assert [r[0] for r in mem.rows] == list(plan.stats)
    assert "npu_sram" in str(mem) and "2.00 MiB" in str(mem)
    assert mem.columns[-1] == "as scheduled" and {r[-1] for r in mem.rows} == {"-"}   # hand-built: not known
    crowded = replace(plan, stats={**plan.stats, "npu_sram": replace(plan.stats["npu_sram"],
                                                                     scheduled_live_bytes=3 << 20)})
    assert dict((r[0], r[-1]) for r in memory_table(crowded).rows)["npu_sram"] == "3.00 MiB"
    solver = str(solver_table(schedule))
    assert "HEURISTIC" in solver and "gap" in solver and "wall time" in solver
    assert "wall" not in str(solver_table(schedule, wall_clock=False))


def test_numerics_table_counts_failures():
    table = numerics_table({"y": {"max_abs_err": 1e-7, "max_rel_err": 1e-6, "passed": True, "shape": (1, 10)},
                            "z": {"max_abs_err": 0.5, "max_rel_err": 0.2, "passed": False}})
    text = str(table)
    assert "1/2 outputs within tolerance" in text and "FAIL" in text and "1x10" in text


def test_report_text_has_every_section(artifacts):
    graph, target, schedule, plan, sim = artifacts
    text = report_text(schedule, graph, plan, None, sim, numerics={"t19": {"passed": True, "max_abs_err": 0.0,
                                                                             "max_rel_err": 0.0}},
                       summary={"model": "chain.onnx", "placement": {"npu": 9},
                                "memory": {"npu_sram": {"peak_bytes": 1, "capacity_bytes": 2}}})
    for section in ("Build summary", "Makespan", "Solver", "Utilisation (planned", "Utilisation (simulated",
                    "Memory", "Numerics vs onnxruntime", "Placement by node"):
        assert section in text, section
    assert text.count("Memory\n======") == 1  # the summary's memory table gives way to the plan's


SUMMARY = {"model": "models/tiny_cnn.onnx", "target": "edge-soc", "scheduler": "cpsat", "nodes": 12,
           "placement": {"cpu": 2, "npu": 8, "dsp": 2}, "makespan_us": 120.5, "lower_bound_us": 100.0,
           "gap": 0.17, "solver": {"status": "FEASIBLE", "wall_s": 0.8, "heft_makespan_us": 131.0},
           "compile_s": 1.5,
           "stage_s": {"import": 0.1, "schedule": 0.9},
           "memory": {"npu_sram": {"peak_bytes": 3 << 20, "lower_bound_bytes": 3 << 20, "capacity_bytes": 4 << 20,
                                   "spilled_bytes": 0}},
           "simulated_makespan_us": 125.0, "validation": {"passed": True, "max_abs_err": 1e-6, "max_rel_err": 2e-5}}


def test_summary_renders_in_rich_and_plain_text():
    console = Console(width=120, record=True, color_system=None)
    console.print(render_summary(SUMMARY))
    shown = console.export_text()
    plain = summary_text(SUMMARY)
    for text in (shown, plain):
        for expected in ("tiny_cnn.onnx", "FEASIBLE", "120.50 µs", "+3.7% vs planned", "passed", "npu_sram",
                         "3.00 MiB", "75.0%", "schedule", "HEFT alone: 131.00 µs"):
            assert expected in text, expected


def test_summary_of_an_early_build_shows_what_is_there():
    plain = summary_text({"model": "m.onnx", "makespan_us": 5.0})
    assert "m.onnx" in plain and "simulated" not in plain and "Memory" not in plain


# ---------------------------------------------------------------------------------------------- export
def test_unknown_format_is_a_clear_error(artifacts, tmp_path):
    graph, target, schedule, plan, sim = artifacts
    timeline = Timeline.from_schedule(schedule, graph)
    with pytest.raises(HetcError, match=r"unknown Gantt format 'pdf'; choose one of perfetto, html, png, svg"):
        export_gantt(timeline, "pdf", tmp_path / "g.pdf")
    with pytest.raises(HetcError, match="does not exist"):
        export_gantt(timeline, "html", tmp_path / "missing" / "g.html")
    assert export_gantt(timeline, " HTML ", tmp_path / "g.html").stat().st_size > 0


def test_numerics_table_reads_a_validation_report():
    import numpy as np

    from hetc.validate import compare
    expected = {"y": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)}
    good = compare({"y": expected["y"] + 1e-7}, expected)
    bad = compare({"y": expected["y"] + 0.5}, expected)
    assert "1/1 outputs within tolerance" in str(numerics_table(good)) and "3x4" in str(numerics_table(good))
    text = str(numerics_table(bad))
    assert "FAIL" in text and "0/1" in text and "0.5" in text


def test_gantt_bytes_match_the_exported_files(artifacts, tmp_path):
    graph, target, schedule, plan, sim = artifacts
    timeline = Timeline.from_simulation(sim, schedule, plan, target)
    for fmt in ("perfetto", "html"):
        assert gantt_bytes(timeline, fmt) == export_gantt(timeline, fmt, tmp_path / f"g.{fmt}").read_bytes()
    assert gantt_bytes(timeline, "png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert gantt_bytes(timeline, "svg").lstrip().startswith(b"<?xml")
    with pytest.raises(HetcError, match="unknown Gantt format"):
        gantt_bytes(timeline, "gif")
    for fmt in ("perfetto", "html", "png", "svg"):  # reproducible bundles need reproducible charts
        assert gantt_bytes(timeline, fmt) == gantt_bytes(timeline, fmt), fmt
    files = gantt_files(timeline, ["html", "perfetto"])
    assert sorted(files) == ["gantt.html", "gantt.json"] and files["gantt.html"] == gantt_bytes(timeline, "html")


def test_report_text_is_reproducible_across_solver_wall_times(artifacts):
    from dataclasses import replace
    graph, target, schedule, plan, sim = artifacts
    slower = replace(schedule, stats=replace(schedule.stats, wall_s=9.9, details={"solver_wall_s": 9.1, "seed": 0}))
    faster = replace(schedule, stats=replace(schedule.stats, wall_s=0.1, details={"solver_wall_s": 0.05, "seed": 0}))
    assert report_text(slower, graph, None, target, sim) == report_text(faster, graph, None, target, sim)
    assert "9.9" in report_text(slower, graph, None, target, sim, wall_clock=True)


def test_report_describes_the_one_schedule_and_the_solvers_own_figures_apart(artifacts):
    """After spills the plan carries a re-timed schedule; that is the one the bundle runs and the only one a
    report accepts: its makespan in both tables, its gap against the same bound, the solver's own apart."""
    from dataclasses import replace
    graph, target, schedule, plan, sim = artifacts
    later = tuple(replace(t, start_ns=t.start_ns + 5000, end_ns=t.end_ns + 5000) for t in schedule.tasks)
    shipped = replace(schedule, tasks=later, stats=schedule.stats.shipped(schedule.makespan_ns + 5000))
    retimed = replace(plan, schedule=shipped)
    with pytest.raises(ValueError, match="pass plan.schedule"):
        report_text(schedule, graph, retimed, target)          # the solver's schedule beside a re-timed plan
    text = report_text(shipped, graph, retimed, target)
    makespan = text.split("Makespan\n")[1].split("\n\n")[0]
    assert re.search(r"^planned\s+([\d,.]+)", makespan, re.M).group(1) == f"{(schedule.makespan_ns + 5000) / 1000:,.2f}"
    solver = text.split("Solver\n")[1].split("\n\n")[0]
    assert re.search(r"^makespan\s+([\d,.]+) µs", solver, re.M).group(1) == f"{shipped.makespan_ns / 1000:,.2f}"
    assert re.search(r"^solver objective\s+([\d,.]+) µs", solver, re.M).group(1) == \
        f"{shipped.makespan_ns / 1000:,.2f}"
    own = re.search(r"^solver's own makespan\s+([\d,.]+) µs", solver, re.M).group(1)
    assert own == f"{schedule.stats.objective_ns / 1000:,.2f}"
    assert shipped.stats.gap > schedule.stats.gap and shipped.stats.best_bound_ns == schedule.stats.best_bound_ns
