"""hetc.report: Gantt exports (Perfetto JSON, HTML, PNG, SVG) and text reports for a planned or simulated run.

    timeline = Timeline.from_schedule(schedule, graph, plan, target)      # or Timeline.from_simulation(...)
    export_gantt(timeline, "html", "gantt.html")
    print(report_text(schedule, graph, plan, target, sim_result))
"""
from hetc.report.export import EXTENSIONS, GANTT_FORMATS, export_gantt, gantt_bytes, gantt_files
from hetc.report.perfetto import to_trace_events
from hetc.report.summary_view import render_summary, summary_tables, summary_text
from hetc.report.tables import (ReportTable, makespan_table, memory_table, numerics_table, placement_table,
                                report_text, solver_table, utilisation_table)
from hetc.report.timeline import Flow, Lane, MemorySeries, Slice, Timeline

__all__ = ["Timeline", "Lane", "Slice", "Flow", "MemorySeries", "export_gantt", "gantt_bytes", "gantt_files",
           "GANTT_FORMATS", "EXTENSIONS",
           "to_trace_events", "ReportTable", "placement_table", "utilisation_table", "memory_table",
           "solver_table", "makespan_table", "numerics_table", "report_text", "render_summary",
           "summary_tables", "summary_text"]
