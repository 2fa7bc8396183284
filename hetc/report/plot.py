"""PNG and SVG Gantt charts through matplotlib's Agg backend (no display needed).

One figure: a lane per engine (devices, then DMA engines) coloured by op class, a legend, a time axis in µs,
and under it one occupancy panel per scratchpad (DRAM last, and only when the timeline has it). Each lane is
drawn with a single ``broken_barh`` call (one PolyCollection) rather than a patch per task, so a graph with
thousands of tasks renders in about a second.
"""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from hetc.report.opclass import class_colour  # noqa: E402
from hetc.report.tables import fmt_bytes  # noqa: E402
from hetc.report.timeline import MemorySeries, Timeline  # noqa: E402

_LANE_IN = 0.32          # inches per lane
_PANEL_IN = 1.1          # inches per memory panel
_UNUSED_PANEL_IN = 0.35  # a memory nothing lives in gets a thin strip


def build_figure(timeline: Timeline, width_in: float = 14.0) -> Figure:
    """The chart as a matplotlib Figure (callers may tweak it before saving)."""
    lanes = list(timeline.lanes)
    memories = list(timeline.memories)
    gantt_h = max(1.6, 0.9 + _LANE_IN * len(lanes))
    heights = [gantt_h] + [_PANEL_IN if m.max_bytes > 0 else _UNUSED_PANEL_IN for m in memories]
    fig = plt.figure(figsize=(width_in, sum(heights) + 0.9))
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.45)
    ax = fig.add_subplot(grid[0])
    span = max(timeline.makespan_us, max((s.end_us for s in timeline.slices), default=0.0), 1e-3)
    by_lane = timeline.lane_slices()
    for row, lane in enumerate(lanes):
        slices = by_lane.get(lane.engine, [])
        y = len(lanes) - 1 - row           # first lane on top
        if row % 2:
            ax.axhspan(y - 0.5, y + 0.5, color="#f0f0f0", zorder=0, linewidth=0)
        if slices:
            # Outlines separate neighbouring bars, but on a crowded lane they would paint it black.
            edge = 0.3 if len(slices) <= 150 else 0.0
            ax.broken_barh([(s.start_us, max(s.dur_us, 0.0)) for s in slices], (y - 0.38, 0.76),
                           facecolors=[class_colour(s.op_class) for s in slices], edgecolor="#00000040",
                           linewidth=edge, zorder=2)
    if any(lane.group == "dma" for lane in lanes) and any(lane.group == "compute" for lane in lanes):
        first_dma = next(i for i, lane in enumerate(lanes) if lane.group == "dma")
        ax.axhline(len(lanes) - first_dma - 0.5, color="#888", linewidth=0.8, zorder=1)
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([lane.label for lane in reversed(lanes)])
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.set_xlim(0, span * 1.01)
    ax.set_xlabel("time (µs)")
    ax.grid(axis="x", color="#00000018", zorder=0)
    title = f"{timeline.title}: {timeline.source} run, makespan {timeline.makespan_us:.2f} µs"
    if timeline.source == "simulated" and timeline.planned_makespan_us is not None:
        title += f" (planned {timeline.planned_makespan_us:.2f} µs)"
    if timeline.lower_bound_us:
        title += f", lower bound {timeline.lower_bound_us:.2f} µs"
    ax.set_title(title, fontsize=11, loc="left")
    handles = [Patch(facecolor=class_colour(c), edgecolor="#00000040", label=c) for c in timeline.op_classes()]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
                  title="op class", title_fontsize=8)
    for i, series in enumerate(memories):
        panel = fig.add_subplot(grid[i + 1], sharex=ax)
        _memory_panel(panel, series)
        if i == len(memories) - 1:
            panel.set_xlabel("time (µs)", fontsize=8)
    # The left margin grows with the longest lane label (about 0.08 in per character at 10 pt).
    longest = max((len(lane.label) for lane in lanes), default=10)
    left = min(0.45, (0.08 * longest + 0.3) / width_in)
    fig.subplots_adjust(left=left, right=0.9, top=1 - 0.45 / fig.get_figheight(), bottom=0.5 / fig.get_figheight())
    return fig


def _memory_panel(ax: plt.Axes, series: MemorySeries) -> None:
    cap = fmt_bytes(series.capacity_bytes, 1) if series.capacity_bytes else "unknown"
    ax.set_ylabel(series.memory, rotation=0, ha="right", va="center", fontsize=9)
    ax.grid(axis="x", color="#00000018")
    if series.max_bytes == 0:
        ax.set_yticks([])
        ax.tick_params(axis="x", labelbottom=False)
        ax.text(1.005, 0.5, f"unused\ncapacity {cap}", transform=ax.transAxes, fontsize=8, va="center")
        return
    times = [t for t, _ in series.points]
    live = [b for _, b in series.points]
    most = max(series.max_bytes, 1)
    ax.fill_between(times, live, step="post", color="#4c72b0", alpha=0.35, linewidth=0)
    ax.step(times, live, where="post", color="#4c72b0", linewidth=0.9)
    top = most * 1.1
    # Like the HTML page: a capacity line only when it is on the scale of the use.
    if 0 < series.capacity_bytes <= 2 * most:
        ax.axhline(series.capacity_bytes, color="#c0392b", linestyle="--", linewidth=0.9, label="capacity")
        top = series.capacity_bytes * 1.1
    if series.lower_bound_bytes and series.peak_bytes and series.peak_bytes > series.lower_bound_bytes:
        ax.axhline(series.peak_bytes, color="#555", linestyle=":", linewidth=0.8, label="planned peak address")
    ax.set_ylim(0, top)
    ax.text(1.005, 0.5, f"peak {fmt_bytes(series.max_bytes, 1)}\ncapacity {cap}", transform=ax.transAxes,
            fontsize=8, va="center")
    ax.yaxis.set_major_locator(matplotlib.ticker.MultipleLocator(_byte_step(top)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt_bytes(v, 1)))
    ax.tick_params(axis="y", labelsize=7)


def _byte_step(top: float) -> float:
    """A tick step of 1, 2 or 5 (times 10^k) KiB/MiB/GiB giving about three ticks up to ``top`` bytes."""
    unit = 1024 ** max(0, min(3, int(math.log(max(top, 1), 1024))))
    raw = top / unit / 3
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return unit * power * next((m for m in (1, 2, 5) if m * power >= raw), 10)


def render_image(timeline: Timeline, fmt: str) -> bytes:
    """The chart as ``fmt`` ("png" or "svg") bytes. SVG keeps text as <text> elements so labels stay
    searchable. The bytes depend only on the timeline (no date, fixed SVG ids), so a bundle built twice from
    the same inputs is byte-identical."""
    out = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "hetc", "path.simplify": True}):
        fig = build_figure(timeline)
        try:
            fig.savefig(out, format=fmt, dpi=110, metadata={"Date": None} if fmt == "svg" else None)
        finally:
            plt.close(fig)
    return out.getvalue()
