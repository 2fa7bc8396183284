"""Perfetto / Chrome trace-event JSON (open in https://ui.perfetto.dev or chrome://tracing).

Layout: process 1 "Compute devices" and process 2 "DMA engines" hold one thread per serial engine, so slices
of one thread never partially overlap; process 3 "Memory" holds one counter track per memory.

Flow arrows use the v1 flow events ``s`` (start) and ``f`` (finish, ``"bp": "e"``), one id per semaphore
dependency. Perfetto binds ``s`` to the slice open on its thread at its timestamp and ``f`` with ``bp: e`` to
the enclosing slice, so both are placed one nanosecond *inside* their slices (never on a boundary, where the
neighbouring slice could capture them). The v2 form (``bind_id`` on the slice) allows one flow id per slice
only, and a producer here often feeds several consumers.

Timestamps are microseconds as the format requires, rounded to the nanosecond so that touching slices stay
touching after parsing.
"""
from __future__ import annotations

import json
from typing import Any

from hetc.report.timeline import GROUP_TITLES, Lane, Slice, Timeline

PIDS = {"compute": 1, "dma": 2}
MEMORY_PID = 3
_NS = 0.001  # one nanosecond in microseconds


def _us(t: float) -> float:
    return round(t, 3)


def _threads(timeline: Timeline) -> tuple[dict[int, tuple[int, int]], list[dict[str, Any]]]:
    """Assign each slice a (pid, tid) and emit the naming metadata. A slice that overlaps the previous one
    of its engine (a bug upstream, never expected) goes to an extra "<engine> [overlap]" thread instead of
    producing a malformed trace, so the problem is visible rather than hidden."""
    where: dict[int, tuple[int, int]] = {}
    meta: list[dict[str, Any]] = []
    by_lane = timeline.lane_slices()
    lanes = {lane.engine: lane for lane in timeline.lanes}
    next_tid = {pid: 1 for pid in PIDS.values()}
    for group, pid in PIDS.items():
        members = [lane for lane in timeline.lanes if lane.group == group]
        if not members:
            continue
        meta.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": GROUP_TITLES[group]}})
        meta.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
    for engine, slices in by_lane.items():
        lane = lanes.get(engine) or Lane(engine, "compute", "device")
        pid = PIDS[lane.group]
        rows: list[tuple[int, float]] = []            # (tid, end of its last slice)
        for s in slices:
            row = next((i for i, (_, end) in enumerate(rows) if _us(s.start_us) >= _us(end)), None)
            if row is None:
                tid = next_tid[pid]
                next_tid[pid] += 1
                name = lane.label if not rows else f"{engine} [overlap {len(rows)}]"
                meta += _thread_meta(pid, tid, name)
                rows.append((tid, s.end_us))
                row = len(rows) - 1
            rows[row] = (rows[row][0], s.end_us)
            where[s.id] = (pid, rows[row][0])
        if not rows:  # idle engine: still show its (empty) track
            tid = next_tid[pid]
            next_tid[pid] += 1
            meta += _thread_meta(pid, tid, lane.label)
    return where, meta


def _thread_meta(pid: int, tid: int, name: str) -> list[dict[str, Any]]:
    return [{"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}},
            {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}}]


def _slice_event(s: Slice, pid: int, tid: int) -> dict[str, Any]:
    args = s.json_args()
    args["op_class"] = s.op_class
    return {"ph": "X", "name": s.name, "cat": s.op_class, "pid": pid, "tid": tid, "ts": _us(s.start_us),
            "dur": max(0.0, _us(_us(s.end_us) - _us(s.start_us))), "args": args}


def _inside(s: Slice, near_end: bool) -> float:
    """A timestamp strictly inside ``s`` (one ns from the chosen edge), or its start for a slice under 2 ns."""
    start, end = _us(s.start_us), _us(s.end_us)
    if end - start < 2 * _NS:
        return start
    return _us(end - _NS) if near_end else _us(start + _NS)


def _counter_events(timeline: Timeline) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if not timeline.memories:
        return events
    events.append({"ph": "M", "name": "process_name", "pid": MEMORY_PID, "tid": 0, "args": {"name": "Memory"}})
    events.append({"ph": "M", "name": "process_sort_index", "pid": MEMORY_PID, "tid": 0,
                   "args": {"sort_index": MEMORY_PID}})
    for series in timeline.memories:
        name = f"{series.memory} live bytes"
        for t, live in series.points:
            events.append({"ph": "C", "name": name, "pid": MEMORY_PID, "tid": 0, "ts": _us(t),
                           "args": {"bytes": int(live)}})
        if series.capacity_bytes:
            # A flat second counter shows the ceiling on the same scale as the occupancy.
            for t in (0.0, timeline.makespan_us):
                events.append({"ph": "C", "name": f"{series.memory} capacity", "pid": MEMORY_PID, "tid": 0,
                               "ts": _us(t), "args": {"bytes": int(series.capacity_bytes)}})
    return events


def to_trace_events(timeline: Timeline) -> dict[str, Any]:
    """The whole trace as a JSON-ready dict ({"traceEvents": [...], "displayTimeUnit": "ns", ...})."""
    where, events = _threads(timeline)
    for s in timeline.slices:
        pid, tid = where[s.id]
        events.append(_slice_event(s, pid, tid))
    by_id = timeline.slice_by_id()
    for flow_id, flow in enumerate(timeline.flows, start=1):
        src, dst = by_id.get(flow.src), by_id.get(flow.dst)
        if src is None or dst is None:
            continue
        (spid, stid), (dpid, dtid) = where[src.id], where[dst.id]
        common = {"name": "semaphore", "cat": "sync", "id": flow_id}
        events.append({**common, "ph": "s", "pid": spid, "tid": stid, "ts": _inside(src, near_end=True),
                       "args": {"label": flow.label}})
        events.append({**common, "ph": "f", "bp": "e", "pid": dpid, "tid": dtid,
                       "ts": _inside(dst, near_end=False)})
    events += _counter_events(timeline)
    return {
        "traceEvents": events,
        # Trace timestamps are always microseconds; "ns" only asks viewers to label the axis finer.
        "displayTimeUnit": "ns",
        "otherData": {"title": timeline.title, "source": timeline.source, "time_unit": "us",
                      "makespan_us": timeline.makespan_us, "planned_makespan_us": timeline.planned_makespan_us,
                      "lower_bound_us": timeline.lower_bound_us},
    }


def render_perfetto(timeline: Timeline) -> bytes:
    """The trace file's bytes (compact JSON, UTF-8)."""
    return json.dumps(to_trace_events(timeline), separators=(",", ":")).encode("utf-8")
