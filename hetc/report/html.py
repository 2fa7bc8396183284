"""A self-contained HTML Gantt page: inline SVG, inline style and script, no network fetch of any kind.

Layout (top to bottom): the time axis, one lane per engine grouped under "Compute devices" and "DMA engines",
then one occupancy panel per memory, and a legend by op class. Slices, flow lines and occupancy curves are
drawn in microseconds along x inside one group (``#view``) whose transform maps time to pixels; the script in
html_assets.py changes only that transform to zoom and pan. The SVG is complete without the script (it shows
the whole run), so the page degrades to a static chart.
"""
from __future__ import annotations

import json
from html import escape

from hetc.report.html_assets import ERROR_TRAP, SCRIPT, STYLE
from hetc.report.opclass import CLASS_COLOURS, class_colour
from hetc.report.tables import fmt_bytes
from hetc.report.timeline import GROUP_TITLES, Timeline

MIN_LABEL_W = 150      # px, lane-label column (widened to fit the longest label)
CHAR_W = 6.6           # px per character of the 11 px label font, generously
PLOT_W = 1100          # px, initial width of the time area
RIGHT_PAD = 24         # px, room for the last time-axis label
AXIS_H = 22
GROUP_H = 18
LANE_H = 20
PANEL_H = 64
UNUSED_PANEL_H = 22    # a memory nothing lives in gets a thin strip, not a full empty panel
PANEL_GAP = 8


def _num(x: float) -> str:
    """Compact SVG coordinate: nanosecond resolution in µs, no trailing zeros."""
    return f"{x:.4f}".rstrip("0").rstrip(".") or "0"


class _Layout:
    """Vertical positions of every lane and memory panel."""

    def __init__(self, timeline: Timeline) -> None:
        y = AXIS_H
        self.rows: list[tuple[str, float, str]] = []       # (kind, y, text): group titles
        self.lane_y: dict[str, float] = {}
        for group in ("compute", "dma"):
            lanes = [lane for lane in timeline.lanes if lane.group == group]
            if not lanes:
                continue
            self.rows.append(("group", y, GROUP_TITLES[group]))
            y += GROUP_H
            for lane in lanes:
                self.lane_y[lane.engine] = y
                y += LANE_H
        self.panel_y: dict[str, float] = {}
        self.panel_h: dict[str, float] = {}
        if timeline.memories:
            y += PANEL_GAP
            self.rows.append(("group", y, "Memory occupancy (live bytes)"))
            y += GROUP_H
            for series in timeline.memories:
                self.panel_y[series.memory] = y
                self.panel_h[series.memory] = PANEL_H if series.max_bytes > 0 else UNUSED_PANEL_H
                y += self.panel_h[series.memory] + PANEL_GAP
        self.height = y + 4


def _lanes_svg(timeline: Timeline, layout: _Layout, span: float) -> tuple[list[str], list[str], list[dict]]:
    """Lane labels (fixed column), lane groups with their slices (in #view), and the tooltip records."""
    labels, body, details = [], [], []
    by_lane = timeline.lane_slices()
    for i, lane in enumerate(timeline.lanes):
        y = layout.lane_y[lane.engine]
        labels.append(f'<text class="lane-label" x="8" y="{y + LANE_H * 0.7:.1f}">{escape(lane.label)}</text>')
        parts = [f'<g class="lane" data-engine="{escape(lane.engine)}" data-group="{lane.group}">',
                 f'<rect class="lane-bg{" odd" if i % 2 else ""}" x="0" y="{y}" width="{_num(span)}" '
                 f'height="{LANE_H}"/>']
        for s in by_lane.get(lane.engine, []):
            details.append({"name": s.name, "engine": s.engine, "cls": s.op_class, "start": s.start_us,
                            "end": s.end_us, "args": s.json_args()})
            parts.append(f'<rect class="slice c-{s.op_class}" data-i="{len(details) - 1}" x="{_num(s.start_us)}" '
                         f'y="{y + 2}" width="{_num(max(s.dur_us, 0.0))}" height="{LANE_H - 4}"/>')
        parts.append("</g>")
        body.append("".join(parts))
    return labels, body, details


def _flows_svg(timeline: Timeline, layout: _Layout) -> str:
    by_id = timeline.slice_by_id()
    lines = []
    for flow in timeline.flows:
        src, dst = by_id.get(flow.src), by_id.get(flow.dst)
        if src is None or dst is None or src.engine not in layout.lane_y or dst.engine not in layout.lane_y:
            continue
        y1, y2 = layout.lane_y[src.engine] + LANE_H / 2, layout.lane_y[dst.engine] + LANE_H / 2
        lines.append(f'<line class="flow" vector-effect="non-scaling-stroke" x1="{_num(src.end_us)}" y1="{y1}" '
                     f'x2="{_num(dst.start_us)}" y2="{y2}"/>')
    return '<g id="flows" style="display:none">' + "".join(lines) + "</g>"


def _memory_svg(timeline: Timeline, layout: _Layout, span: float) -> tuple[list[str], list[str]]:
    labels, body = [], []
    for series in timeline.memories:
        top, height = layout.panel_y[series.memory], layout.panel_h[series.memory]
        cap_text = f"capacity {fmt_bytes(series.capacity_bytes)}" if series.capacity_bytes else "capacity unknown"
        if series.max_bytes == 0:
            labels.append(f'<text class="memory-label" x="8" y="{top + 15}">{escape(series.memory)} (unused)</text>')
            body.append(f'<g class="memory" data-memory="{escape(series.memory)}"><rect class="panel-bg" '
                        f'vector-effect="non-scaling-stroke" x="0" y="{top}" width="{_num(span)}" '
                        f'height="{height}"/></g>')
            continue
        most = max(series.max_bytes, series.peak_bytes or 0, 1)
        # Draw the capacity line only when it is on the same scale as the use (the curve keeps at least half
        # the panel); a 512 MiB DRAM would flatten a 3 MiB curve to nothing.
        show_cap = 0 < series.capacity_bytes <= 2 * most
        scale_max = max(most, series.capacity_bytes if show_cap else 0) * 1.05
        def y_of(b: float) -> float:
            return top + PANEL_H - b / scale_max * (PANEL_H - 4)
        d = [f"M0,{y_of(0):.1f}"]
        for t, live in series.points:
            d.append(f"H{_num(t)}V{y_of(live):.1f}")
        d.append(f"H{_num(span)}V{y_of(0):.1f}Z")
        if series.capacity_bytes and not show_cap:
            cap_text += " (off scale)"
        labels.append(f'<text class="memory-label" x="8" y="{top + 14}">{escape(series.memory)}</text>'
                      f'<text x="8" y="{top + 28}">peak {fmt_bytes(series.max_bytes)}</text>'
                      f'<text x="8" y="{top + 42}">{cap_text}</text>')
        parts = [f'<g class="memory" data-memory="{escape(series.memory)}">',
                 f'<rect class="panel-bg" vector-effect="non-scaling-stroke" x="0" y="{top}" width="{_num(span)}" '
                 f'height="{PANEL_H}"/>',
                 f'<path class="occupancy" vector-effect="non-scaling-stroke" d="{"".join(d)}"/>']
        if show_cap:
            parts.append(f'<line class="capacity" vector-effect="non-scaling-stroke" x1="0" x2="{_num(span)}" '
                         f'y1="{y_of(series.capacity_bytes):.1f}" y2="{y_of(series.capacity_bytes):.1f}"/>')
        parts.append("</g>")
        body.append("".join(parts))
    return labels, body


def _legend(timeline: Timeline) -> str:
    items = [f'<span class="legend-item" data-class="{c}"><span class="swatch" style="background:{class_colour(c)}">'
             f'</span>{escape(c)}</span>' for c in timeline.op_classes()]
    return '<div id="legend">' + "".join(items) + "</div>"


def _meta_line(timeline: Timeline) -> str:
    parts = [f"{timeline.source} run", f"makespan {timeline.makespan_us:.2f} µs"]
    if timeline.source == "simulated" and timeline.planned_makespan_us is not None:
        parts.append(f"planned {timeline.planned_makespan_us:.2f} µs")
    if timeline.lower_bound_us:
        parts.append(f"lower bound {timeline.lower_bound_us:.2f} µs")
    parts.append(f"{len(timeline.slices)} tasks on {len(timeline.lanes)} engines")
    return " · ".join(parts)


def render_html(timeline: Timeline) -> str:
    """The page as one string."""
    layout = _Layout(timeline)
    span = max(timeline.makespan_us, max((s.end_us for s in timeline.slices), default=0.0), 1e-3)
    lane_labels, lane_body, details = _lanes_svg(timeline, layout, span)
    mem_labels, mem_body = _memory_svg(timeline, layout, span)
    group_titles = [f'<text class="group-title" x="4" y="{y + 13}">{escape(text)}</text>'
                    for _, y, text in layout.rows]
    labels = [lane.label for lane in timeline.lanes] + [f"{m.memory} (unused)" for m in timeline.memories]
    label_w = int(max([MIN_LABEL_W] + [CHAR_W * len(label) + 20 for label in labels]))
    data = {"makespan": span, "slices": details,
            "layout": {"labelWidth": label_w, "plotWidth": PLOT_W, "padWidth": RIGHT_PAD, "height": layout.height}}
    # "</" inside a script block would end it early; JSON allows the escaped form.
    data_json = json.dumps(data, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")
    colours = "".join(f".c-{c}{{fill:{col}}}" for c, col in CLASS_COLOURS.items())
    width = label_w + PLOT_W + RIGHT_PAD
    svg = (
        f'<svg id="gantt" width="{width}" height="{layout.height:.0f}" viewBox="0 0 {width} {layout.height:.0f}">'
        f'<g id="axis"></g>'
        f'<g class="labels">{"".join(group_titles)}{"".join(lane_labels)}{"".join(mem_labels)}</g>'
        f'<svg id="plot" x="{label_w}" y="0" width="{PLOT_W}" height="{layout.height:.0f}" overflow="hidden">'
        f'<g id="view" transform="scale({PLOT_W / span},1)">'
        f'{"".join(lane_body)}{_flows_svg(timeline, layout)}{"".join(mem_body)}'
        f"</g></svg></svg>")
    title = escape(f"hetc Gantt: {timeline.title} ({timeline.source})")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title}</title><style>{STYLE}{colours}</style></head>\n<body>"
        f"<script>{ERROR_TRAP}</script>"
        f"<h1>{title}</h1><div class=\"meta\">{escape(_meta_line(timeline))}</div>"
        '<div class="controls"><button id="zoom-in" title="Zoom in">+</button>'
        '<button id="zoom-out" title="Zoom out">&minus;</button><button id="zoom-reset">Fit</button>'
        '<label><input type="checkbox" id="show-flows"> semaphore dependencies</label>'
        "<span>wheel: zoom · drag: pan · hover: details</span></div>"
        f'<div id="chart">{svg}</div>{_legend(timeline)}'
        '<div id="tooltip" hidden></div><pre id="hetc-errors"></pre>'
        f'<script type="application/json" id="hetc-data">{data_json}</script>'
        f"<script>{SCRIPT}</script></body></html>\n")
