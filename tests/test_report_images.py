"""PNG and SVG Gantt charts through matplotlib."""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import pytest

from hetc.report import Timeline, export_gantt
from test_report_artifacts import make_all

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def small():
    graph, target, schedule, plan, sim = make_all(30)
    return {"planned": Timeline.from_schedule(schedule, graph, plan, target),
            "simulated": Timeline.from_simulation(sim, schedule, plan, target)}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("which", ["planned", "simulated"])
def test_png_is_a_real_chart(small, which, tmp_path):
    path = export_gantt(small[which], "png", tmp_path / "g.png")
    data = path.read_bytes()
    width, height = _png_size(data)
    assert width >= 1000 and height >= 600
    assert len(data) > 30_000  # lanes, bars, panels: far more than an empty canvas


def _svg_texts(path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return ["".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize("which", ["planned", "simulated"])
def test_svg_has_one_label_per_lane_a_legend_and_memory_panels(small, which, tmp_path):
    timeline = small[which]
    texts = _svg_texts(export_gantt(timeline, "svg", tmp_path / "g.svg"))
    for lane in timeline.lanes:
        assert texts.count(lane.label) == 1, lane.label
    for cls in timeline.op_classes():
        assert cls in texts, cls
    for series in timeline.memories:
        assert series.memory in texts
    assert "time (µs)" in texts


def test_idle_engines_still_get_a_lane(tmp_path):
    """A schedule that never uses the DSP still shows the DSP lane (the idle device is the story)."""
    from dataclasses import replace
    graph, target, schedule, plan, sim = make_all(6)
    tasks = tuple(t for t in schedule.tasks if t.engine not in ("dsp", "dma_dsp", "dma_x"))
    timeline = Timeline.from_schedule(replace(schedule, tasks=tasks), graph, target=target)
    texts = _svg_texts(export_gantt(timeline, "svg", tmp_path / "idle.svg"))
    assert "dsp (dsp_tcm)" in texts


def test_thousands_of_tasks_render(tmp_path):
    # (how long it takes: `python tools/bench_gantt.py`, a real build of some 3,000 tasks)
    graph, target, schedule, plan, sim = make_all(2500)
    timeline = Timeline.from_schedule(schedule, graph, plan, target)
    assert len(timeline.slices) > 4000
    for fmt in ("png", "svg"):
        written = export_gantt(timeline, fmt, tmp_path / f"big.{fmt}")
        assert written.stat().st_size > 10_000


def test_unused_memory_gets_a_thin_labelled_strip(tmp_path):
    from dataclasses import replace

    from hetc.report.html import render_html
    graph, target, schedule, plan, sim = make_all(6)
    no_dsp = replace(plan, buffers=tuple(b for b in plan.buffers if b.memory != "dsp_tcm"))
    timeline = Timeline.from_schedule(schedule, graph, no_dsp, target)
    assert [m.memory for m in timeline.memories] == ["dsp_tcm", "npu_sram", "dram"]
    assert timeline.memories[0].max_bytes == 0
    texts = _svg_texts(export_gantt(timeline, "svg", tmp_path / "unused.svg"))
    assert any(t.startswith("unused") for t in texts)
    assert "dsp_tcm (unused)" in render_html(timeline)
