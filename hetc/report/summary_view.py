"""The build summary (DESIGN.md's ``--json`` object) as tables: rich for the console, plain for report.txt.

Every key is optional: the summary grows as later stages run (memory after planning, ``simulated_makespan_us``
and ``validation`` after simulation), and the view shows whatever is there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from hetc.report.tables import ReportTable, fmt_bytes, fmt_err, fmt_pct, fmt_us

if TYPE_CHECKING:
    from rich.console import RenderableType


def _build_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []

    def add(label: str, key: str, fmt: Any = str) -> None:
        if summary.get(key) is not None:
            rows.append((label, fmt(summary[key])))

    add("model", "model")
    add("target", "target")
    add("scheduler", "scheduler")
    add("nodes", "nodes")
    add("planned makespan", "makespan_us", lambda v: f"{fmt_us(v)} µs")
    add("lower bound", "lower_bound_us", lambda v: f"{fmt_us(v)} µs")
    add("gap", "gap", fmt_pct)       # the shipped schedule's: the one emitted, simulated and reported
    solver = summary.get("solver") or {}
    own = solver.get("own")
    if own:   # memory planning re-timed the solver's schedule, or shipped HEFT's: its own figures, apart
        rows.append(("solver's own", f"makespan {fmt_us(own['makespan_us'])} µs, gap {fmt_pct(own['gap'])}, "
                                     f"{own['status']} "
                     + (f"({own['superseded']})" if own.get("superseded") else
                        "(before memory planning re-timed it)")))
    if solver:
        wall, heft = solver.get("wall_s"), solver.get("heft_makespan_us")
        rows.append(("solver", f"{solver.get('status', '?')}" + (f" in {wall:.2f} s" if wall is not None else "")
                     + (f" (HEFT alone: {fmt_us(heft)} µs)" if heft is not None else "")))
    sim = summary.get("simulated_makespan_us")
    if sim is not None:
        planned = summary.get("makespan_us")
        delta = f" ({(sim - planned) / planned:+.1%} vs planned)" if planned else ""
        rows.append(("simulated makespan", f"{fmt_us(sim)} µs{delta}"))
    predicated = summary.get("predicated")
    if predicated:   # hetc.ir.predicates: the planned makespan is the worst case, every gate on
        tasks = f"{predicated['predicated_tasks']} tasks"
        if "expected_us" in predicated:
            rows.append(("predicated", f"{tasks}; expected {fmt_us(predicated['expected_us'])} µs over "
                                       f"{predicated['draws']} input(s) ({fmt_us(predicated['min_us'])}-"
                                       f"{fmt_us(predicated['max_us'])}), "
                                       f"{fmt_us(predicated['uniform_us'])} µs over {predicated['routings']} "
                                       f"uniform routing(s), worst case {fmt_us(predicated['worst_case_us'])} µs"))
        else:
            rows.append(("predicated", f"{tasks}; the planned makespan is the worst case (every gate on); "
                                       "--validate for the expected one"))
    validation = summary.get("validation")
    if validation:
        verdict = "passed" if validation.get("passed") else "FAILED"
        rows.append(("validation", f"{verdict} (max abs err {fmt_err(validation.get('max_abs_err'))}, "
                                   f"max rel err {fmt_err(validation.get('max_rel_err'))}"
                                   + (f", error {fmt_err(validation['max_ratio'])}x onnxruntime's"
                                      if validation.get("max_ratio") is not None else "") + ")"))
    add("compile time", "compile_s", lambda v: f"{v:.2f} s")
    return rows


def summary_tables(summary: Mapping[str, Any]) -> list[ReportTable]:
    """The summary as a list of tables: build figures, placement, memory, stage times."""
    tables = [ReportTable.key_values("Build summary", _build_rows(summary))]
    placement = summary.get("placement") or {}
    if placement:
        total = sum(placement.values()) or 1
        rows = tuple((d, str(n), fmt_pct(n / total)) for d, n in placement.items())
        tables.append(ReportTable("Placement", ("device", "nodes", "share"), rows, "lrr"))
    memory = summary.get("memory") or {}
    if memory:
        rows = []
        for name, m in memory.items():
            cap = m.get("capacity_bytes")
            peak = m.get("peak_bytes")
            rows.append((name, fmt_bytes(peak), fmt_bytes(m.get("lower_bound_bytes")), fmt_bytes(cap),
                         fmt_pct(peak / cap if cap and peak is not None else None),
                         fmt_bytes(m.get("spilled_bytes", 0)), fmt_bytes(m.get("scheduled_live_bytes"))))
        tables.append(ReportTable("Memory", ("memory", "peak", "lower bound", "capacity", "used", "spilled",
                                             "as scheduled"), tuple(rows), "lrrrrrr"))
    stages = summary.get("stage_s") or {}
    if stages:
        rows = tuple((stage, f"{seconds:.3f}") for stage, seconds in stages.items())
        tables.append(ReportTable("Stage times", ("stage", "seconds"), rows, "lr"))
    return tables


def summary_text(summary: Mapping[str, Any]) -> str:
    """Plain-text form of ``render_summary`` (for report.txt and logs)."""
    return "\n".join(str(t) for t in summary_tables(summary))


def render_summary(summary: Mapping[str, Any]) -> "RenderableType":
    """A rich renderable for the console: ``console.print(render_summary(result.summary))``."""
    from rich.console import Group
    return Group(*(t.rich() for t in summary_tables(summary)))
