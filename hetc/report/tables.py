"""Text reports. Each builder returns a ``ReportTable``: ``str(table)`` is plain fixed-width text for
``report.txt``, ``table.rich()`` a rich Table for the console; both come from the same rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from hetc.memory.artifact import spills_note

if TYPE_CHECKING:
    from rich.table import Table

    from hetc.ir import Graph
    from hetc.memory.artifact import MemoryPlan
    from hetc.schedule.artifact import Schedule
    from hetc.sim.result import SimResult
    from hetc.target.target import Target

    from hetc.report.timeline import Timeline


@dataclass(frozen=True)
class ReportTable:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""             # one letter per column, "l" or "r"; default: left
    note: str = ""              # a line printed under the table
    header: bool = True         # False for key/value tables

    @classmethod
    def key_values(cls, title: str, pairs: Iterable[tuple[str, str]], note: str = "") -> "ReportTable":
        return cls(title, ("", ""), tuple(pairs), "ll", note, header=False)

    def _align(self, i: int) -> str:
        return self.align[i] if i < len(self.align) else "l"

    def __str__(self) -> str:
        widths = [max([len(c)] + [len(r[i]) for r in self.rows]) for i, c in enumerate(self.columns)]

        def line(cells: Iterable[str]) -> str:
            out = [c.rjust(w) if self._align(i) == "r" else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
            return "  ".join(out).rstrip()

        text = [self.title, "=" * len(self.title)]
        if self.header:
            text += [line(self.columns), line("-" * w for w in widths)]
        text += [line(r) for r in self.rows]
        if self.note:
            text.append(self.note)
        return "\n".join(text) + "\n"

    def rich(self) -> "Table":
        from rich.table import Table
        table = Table(title=self.title, title_justify="left", caption=self.note or None, caption_justify="left",
                      show_header=self.header)
        for i, c in enumerate(self.columns):
            table.add_column(c, justify="right" if self._align(i) == "r" else "left")
        for r in self.rows:
            table.add_row(*r)
        return table


# ---------------------------------------------------------------------------------------------- formatting
def fmt_bytes(n: float | None, digits: int = 2) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.{digits}f} {unit}"
    return f"{int(n)} B"


def fmt_us(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def fmt_err(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a mapping or an object, so tables accept JSON dicts and dataclasses alike."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


# ---------------------------------------------------------------------------------------------- tables
def placement_table(schedule: "Schedule", graph: "Graph | None", target: "Target | None" = None) -> ReportTable:
    """One row per node, in start order: where it ran, when, and (with a target) why each device that was
    not used *could not* run it, so "why did this op fall back to the CPU" always has an answer."""
    nodes = graph.node_map() if graph is not None else {}
    compute = sorted((t for t in schedule.tasks if t.kind == "compute"), key=lambda t: (t.start_ns, t.id))
    rows = []
    for t in compute:
        node = nodes.get(t.node) if t.node is not None else None
        reasons = []
        if target is not None and node is not None:
            for device in target.devices:
                if device != t.engine:
                    verdict = target.supports(node, device)
                    if not verdict:
                        reasons.append(f"{device}: {verdict}")
        rows.append((str(t.node), node.name if node is not None else "-", t.op or "-", t.engine,
                     fmt_us(t.start_ns / 1000), fmt_us(t.duration_ns / 1000), "; ".join(reasons)))
    counts: dict[str, int] = {}
    for device in schedule.placement.values():
        counts[device] = counts.get(device, 0) + 1
    note = "placement: " + ", ".join(f"{d} {n}" for d, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    columns = ("node", "name", "op", "device", "start µs", "dur µs", "other devices refused")
    return ReportTable("Placement by node", columns, tuple(rows), "rlllrrl", note)


def utilisation_table(timeline: "Timeline") -> ReportTable:
    """Per engine: tasks, busy time and busy fraction of the makespan; for a simulated run also the time the
    engine sat blocked on semaphore waits (idle because of a dependency, not for lack of work)."""
    counts: dict[str, int] = {}
    for s in timeline.slices:
        counts[s.engine] = counts.get(s.engine, 0) + 1
    busy, util = timeline.busy_us(), timeline.utilisation()
    simulated = timeline.source == "simulated"
    rows = []
    for lane in timeline.lanes:
        row = (lane.engine, lane.kind, str(counts.get(lane.engine, 0)), fmt_us(busy.get(lane.engine, 0.0)),
               fmt_pct(util.get(lane.engine, 0.0)))
        rows.append(row + ((fmt_us(timeline.waiting_us.get(lane.engine, 0.0)),) if simulated else ()))
    columns = ("engine", "kind", "tasks", "busy µs", "busy") + (("waiting µs",) if simulated else ())
    return ReportTable(f"Utilisation ({timeline.source}, makespan {fmt_us(timeline.makespan_us)} µs)",
                       columns, tuple(rows), "llrrrr")


def memory_table(plan: "MemoryPlan") -> ReportTable:
    """Per memory: planned peak address vs the lower bound (max live bytes) vs capacity, spills, and the most
    bytes the schedule held live before memory planning repaired it ("as scheduled")."""
    rows = []
    for memory, s in plan.stats.items():
        overhead = (s.peak_bytes - s.lower_bound_bytes) / s.lower_bound_bytes if s.lower_bound_bytes else 0.0
        rows.append((memory, fmt_bytes(s.peak_bytes), fmt_bytes(s.lower_bound_bytes), fmt_pct(overhead),
                     fmt_bytes(s.capacity_bytes),
                     fmt_pct(s.peak_bytes / s.capacity_bytes if s.capacity_bytes else None),
                     fmt_bytes(s.spilled_bytes), fmt_us(s.peak_time_ns / 1000),
                     fmt_bytes(s.scheduled_live_bytes)))
    note = (f"{len(plan.buffers)} buffers, {spills_note(plan.spills)}; "
            f"constants region {fmt_bytes(plan.constants_bytes)}")
    return ReportTable("Memory", ("memory", "peak", "lower bound", "over bound", "capacity", "used", "spilled",
                                  "peak at µs", "as scheduled"), tuple(rows), "lrrrrrrrr", note)


def solver_table(schedule: "Schedule", wall_clock: bool = True) -> ReportTable:
    """Strategy, status, objective and bounds of the schedule that ships (and the solver's own figures when
    memory planning re-timed it), and the strategy's details. ``wall_clock=False`` leaves out the run-to-run
    timings (wall time, any detail named ``*wall*``) so the text is reproducible."""
    st = schedule.stats
    rows = [("strategy", st.strategy), ("status", st.status),
            ("makespan", f"{fmt_us(schedule.makespan_ns / 1000)} µs"),
            ("solver objective", f"{fmt_us(st.objective_ns / 1000)} µs"),
            ("solver best bound", f"{fmt_us(st.best_bound_ns / 1000)} µs"),
            ("lower bound", f"{fmt_us(schedule.lower_bound_ns / 1000)} µs"),
            ("gap", fmt_pct(schedule.gap) if schedule.lower_bound_ns > 0 else "-"),
            ("time unit", f"{st.tick_ns} ns")]
    own = st.details.get("solver_own")
    if own is not None:   # memory planning re-timed the solver's schedule: the solver's own figures, apart
        rows += [("solver's own status", str(own["status"])),
                 ("solver's own makespan", f"{fmt_us(own['objective_ns'] / 1000)} µs"),
                 ("solver's own gap", fmt_pct(own["gap"]))]
        if "heft_after_planning" in st.details:   # its schedule, planned, was slower than HEFT's
            rows.append(("shipped instead", st.details["heft_after_planning"]))
    parts = st.details.get("bound_parts_ns")
    if parts:
        rows.append(("lower bound from", _bound_source(parts, schedule.lower_bound_ns)))
    if wall_clock:
        rows.append(("wall time", f"{st.wall_s:.3f} s"))
    rows += [(str(k), _short(v)) for k, v in st.details.items()
             if k not in ("solver_own", "bound_parts_ns") and (wall_clock or "wall" not in str(k))]
    return ReportTable.key_values("Solver", rows)


def _bound_source(parts: dict[str, int], bound_ns: int) -> str:
    """Which bound decides (hetc.schedule.bound.bound_parts), then the others, largest first."""
    ranked = sorted(parts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{name} {fmt_us(ns / 1000)} µs" for name, ns in ranked)
    if bound_ns > ranked[0][1]:
        return f"the solver's proof ({fmt_us(bound_ns / 1000)} µs); {text}"
    return text


def makespan_table(schedule: "Schedule", sim_result: "SimResult | None" = None) -> ReportTable:
    """Planned vs simulated makespan, both against the lower bound."""
    planned = schedule.makespan_ns / 1000
    bound = schedule.lower_bound_ns / 1000

    def gap(span: float) -> str:  # a zero bound means "none computed" (hand-made schedules): no gap to show
        return fmt_pct((span - bound) / span) if span > 0 and bound > 0 else "-"

    rows = [("planned", fmt_us(planned), gap(planned), "")]
    if sim_result is not None:
        sim = sim_result.makespan_ns / 1000
        delta = (sim - planned) / planned if planned else None
        rows.append(("simulated", fmt_us(sim), gap(sim), ("+" if sim >= planned else "") + fmt_pct(delta)))
    rows.append(("lower bound", fmt_us(bound) if bound > 0 else "-", "", ""))
    return ReportTable("Makespan", ("run", "µs", "gap to bound", "vs planned"), tuple(rows), "lrrr")


def numerics_table(results: Any) -> ReportTable:
    """Per graph output: max absolute error against onnxruntime, the validation rule's figures (hetc's and
    onnxruntime's error against the float64 reference, their ratio; hetc.validate.compare) and pass/fail.

    ``results`` is a ``hetc.validate.ValidationReport`` (its ``outputs`` and ``rule()`` are used), a mapping
    output name -> record, or a sequence of records with a ``name``. A record is a dict or an object with
    ``max_abs_err``, ``max_rel_err``, ``passed`` and optionally ``shape``, ``dtype``, ``cosine``, ``note``,
    ``hetc_err``, ``ort_err``, ``ratio``."""
    rule = None if isinstance(results, Mapping) else getattr(results, "rule", None)
    records = getattr(results, "outputs", results)
    items = records.items() if isinstance(records, Mapping) else ((field_of(r, "name", "?"), r) for r in records)
    rows, failed = [], 0
    for name, r in items:
        passed = bool(field_of(r, "passed", False))
        failed += not passed
        shape = field_of(r, "shape")
        cosine = field_of(r, "cosine")
        ratio = field_of(r, "ratio")
        note = field_of(r, "note") or ""
        rows.append((str(name), ("x".join(map(str, shape)) or "scalar") if shape is not None else "-",
                     str(field_of(r, "dtype", "-")), fmt_err(field_of(r, "max_abs_err")),
                     fmt_err(field_of(r, "max_rel_err")), fmt_err(field_of(r, "hetc_err")),
                     fmt_err(field_of(r, "ort_err")), "-" if ratio is None else f"{ratio:.3g}",
                     "-" if cosine is None else f"{cosine:.6f}",
                     ("ok" if passed else "FAIL") + (f" ({note})" if note else "")))
    note = f"{len(rows) - failed}/{len(rows)} outputs within tolerance"
    if callable(rule):
        note += f" ({rule()}); reference: {results.reference}"
    return ReportTable("Numerics vs onnxruntime", ("output", "shape", "dtype", "max abs err", "max rel err",
                                                   "hetc err", "ort err", "ratio", "cosine", "result"),
                       tuple(rows), "lllrrrrrrl", note)


def report_text(schedule: "Schedule", graph: "Graph | None", plan: "MemoryPlan | None" = None,
                target: "Target | None" = None, sim_result: "SimResult | None" = None,
                numerics: Any = None, summary: Mapping[str, Any] | None = None,
                wall_clock: bool = False) -> str:
    """The whole ``report.txt``: every table the given artifacts allow, separated by blank lines. Wall-clock
    timings are left out unless ``wall_clock``: a bundle built twice from the same inputs must be identical."""
    from hetc.report.summary_view import summary_tables
    from hetc.report.timeline import Timeline, one_schedule
    tables: list[ReportTable] = list(summary_tables(summary)) if summary else []
    if plan is not None:  # the plan's memory table below says all the summary's does, and more
        tables = [t for t in tables if t.title != "Memory"]
    # One schedule: the plan's (re-timed when spills were inserted) is the one emitted and simulated.
    one_schedule(schedule, plan)
    tables.append(makespan_table(schedule, sim_result))
    tables.append(solver_table(schedule, wall_clock))
    planned = Timeline.from_schedule(schedule, graph, plan, target)
    tables.append(utilisation_table(planned))
    if sim_result is not None:
        tables.append(utilisation_table(Timeline.from_simulation(sim_result, schedule, plan, target)))
    if plan is not None:
        tables.append(memory_table(plan))
    if numerics is not None:
        tables.append(numerics_table(numerics))
    tables.append(placement_table(schedule, graph, target))
    if graph is not None:
        tiling = tiling_table(graph)
        if tiling is not None:
            tables.append(tiling)
    return "\n".join(str(t) for t in tables)


def tiling_table(graph: "Graph") -> ReportTable | None:
    """One row per node the tiler cut: its tiles, the axes and why that cut (None when no node was cut)."""
    from hetc.target.tiling import tiling_rows
    rows = tiling_rows(graph)
    if not rows:
        return None
    return ReportTable("Tiling", ("node", "op", "tiles", "cut along", "why"),
                       tuple((r["node"], r["op"], str(r["tiles"]), r["axis"], r["why"]) for r in rows), "llrll",
                       f"{len(rows)} nodes cut into {sum(r['tiles'] for r in rows)} tiles")


def _short(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."
