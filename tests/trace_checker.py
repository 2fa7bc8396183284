"""A checker for Chrome / Perfetto trace-event JSON, reusable by any test that writes a trace.

``check_trace(trace)`` returns the list of rule violations (empty when the trace is well formed);
``assert_valid_trace(trace)`` raises AssertionError listing them. Rules enforced:

* the top level is an object with a ``traceEvents`` list and a ``displayTimeUnit`` of "ms" or "ns";
* every event has a one-letter ``ph`` the checker knows, a string ``name``, and integer ``pid``/``tid``;
* ``X`` events have numeric ``ts >= 0`` and ``dur >= 0`` (microseconds) and a dict ``args`` if any;
* the ``X`` slices of one thread nest perfectly: a slice starts after the previous one ends or lies entirely
  inside it (never a partial overlap);
* ``M`` events are process/thread names or sort indices with the right ``args`` key; every thread that holds
  a slice has a ``thread_name`` and every such process a ``process_name``;
* ``C`` events carry a dict of numeric ``args``; each counter's timestamps never go backwards;
* flow events ``s``/``f`` pair up by (cat, name, id): exactly one start and one finish per id, the finish
  not earlier than the start, each inside a slice of its thread (``f`` must use ``"bp": "e"``);
* with ``makespan_us`` given, the last slice ends within 0.1 % of it, which pins the time unit to µs.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

KNOWN_PHASES = {"X", "B", "E", "M", "C", "s", "t", "f", "i", "I"}
METADATA_KEYS = {"process_name": "name", "thread_name": "name", "process_sort_index": "sort_index",
                 "thread_sort_index": "sort_index"}
EPS = 1e-6  # µs; absorbs float rounding of ts + dur


def load_trace(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def check_trace(trace: Any, makespan_us: float | None = None) -> list[str]:
    problems: list[str] = []
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return ["top level must be an object with a 'traceEvents' list"]
    if trace.get("displayTimeUnit") not in ("ms", "ns"):
        problems.append(f"displayTimeUnit must be 'ms' or 'ns', got {trace.get('displayTimeUnit')!r}")
    slices: dict[tuple[int, int], list[tuple[float, float, str]]] = defaultdict(list)
    named_threads: set[tuple[int, int]] = set()
    named_processes: set[int] = set()
    counters: dict[tuple[int, str], list[float]] = defaultdict(list)
    flows: dict[tuple[str, str, Any], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for i, ev in enumerate(trace["traceEvents"]):
        where = f"event {i} ({ev.get('ph')!r} {ev.get('name')!r})" if isinstance(ev, dict) else f"event {i}"
        if not isinstance(ev, dict):
            problems.append(f"{where}: not an object")
            continue
        ph = ev.get("ph")
        if ph not in KNOWN_PHASES:
            problems.append(f"{where}: unknown phase")
            continue
        if not isinstance(ev.get("name"), str):
            problems.append(f"{where}: 'name' must be a string")
        for key in ("pid", "tid"):
            if type(ev.get(key)) is not int:
                problems.append(f"{where}: '{key}' must be an integer, got {ev.get(key)!r}")
        if "args" in ev and not isinstance(ev["args"], dict):
            problems.append(f"{where}: 'args' must be an object")
        if ph != "M" and not _number(ev.get("ts")):
            problems.append(f"{where}: 'ts' must be a number")
            continue
        thread = (ev.get("pid"), ev.get("tid"))
        if ph == "X":
            dur = ev.get("dur")
            if not _number(dur) or dur < 0:
                problems.append(f"{where}: 'dur' must be a non-negative number, got {dur!r}")
                continue
            if ev["ts"] < 0:
                problems.append(f"{where}: negative timestamp")
            slices[thread].append((float(ev["ts"]), float(ev["ts"]) + float(dur), ev["name"]))
        elif ph == "M":
            key = METADATA_KEYS.get(ev.get("name"))
            if key is None:
                problems.append(f"{where}: unknown metadata event")
            elif key not in ev.get("args", {}):
                problems.append(f"{where}: metadata needs args.{key}")
            elif ev["name"] == "thread_name":
                named_threads.add(thread)
            elif ev["name"] == "process_name":
                named_processes.add(ev.get("pid"))
        elif ph == "C":
            args = ev.get("args")
            if not isinstance(args, dict) or not args or not all(_number(v) for v in args.values()):
                problems.append(f"{where}: counter args must be a non-empty object of numbers")
            counters[(ev.get("pid"), ev["name"])].append(float(ev["ts"]))
        elif ph in ("s", "t", "f"):
            if "id" not in ev:
                problems.append(f"{where}: flow event without 'id'")
                continue
            if ph == "f" and ev.get("bp") != "e":
                problems.append(f"{where}: flow finish should bind to its enclosing slice (\"bp\": \"e\")")
            flows[(ev.get("cat", ""), ev["name"], ev["id"])][ph].append(ev)
    problems += _check_nesting(slices)
    for thread in slices:
        if thread not in named_threads:
            problems.append(f"thread {thread} has slices but no thread_name metadata")
        if thread[0] not in named_processes:
            problems.append(f"process {thread[0]} has slices but no process_name metadata")
    for (pid, name), times in counters.items():
        if any(b < a for a, b in zip(times, times[1:])):
            problems.append(f"counter {name!r} (pid {pid}) goes back in time")
    problems += _check_flows(flows, slices)
    if makespan_us is not None:
        last = max((end for spans in slices.values() for _, end, _ in spans), default=0.0)
        if abs(last - makespan_us) > max(1e-3, 1e-3 * makespan_us):
            problems.append(f"last slice ends at {last} but the makespan is {makespan_us} µs: wrong time unit?")
    return problems


def assert_valid_trace(trace: Any, makespan_us: float | None = None) -> None:
    problems = check_trace(trace, makespan_us)
    assert not problems, f"{len(problems)} trace problems:\n" + "\n".join(problems[:20])


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_nesting(slices: dict[tuple[int, int], list[tuple[float, float, str]]]) -> list[str]:
    problems = []
    for thread, spans in slices.items():
        stack: list[tuple[float, float, str]] = []
        for start, end, name in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and start >= stack[-1][1] - EPS:
                stack.pop()
            if stack and end > stack[-1][1] + EPS:
                top = stack[-1]
                problems.append(f"thread {thread}: {name!r} [{start}, {end}) partially overlaps "
                                f"{top[2]!r} [{top[0]}, {top[1]})")
                continue
            stack.append((start, end, name))
    return problems


def _enclosing(spans: list[tuple[float, float, str]], ts: float) -> bool:
    return any(start - EPS <= ts <= start + EPS if end - start < EPS else start - EPS <= ts < end - EPS
               for start, end, _ in spans)


def _check_flows(flows: dict, slices: dict) -> list[str]:
    problems = []
    for key, phases in flows.items():
        starts, finishes = phases.get("s", []), phases.get("f", [])
        if len(starts) != 1 or len(finishes) != 1:
            problems.append(f"flow {key}: {len(starts)} start(s) and {len(finishes)} finish(es), want 1 and 1")
            continue
        s, f = starts[0], finishes[0]
        if f["ts"] < s["ts"]:
            problems.append(f"flow {key}: finishes at {f['ts']} before it starts at {s['ts']}")
        for ev in (s, f):
            if not _enclosing(slices.get((ev.get("pid"), ev.get("tid")), []), float(ev["ts"])):
                problems.append(f"flow {key}: '{ev['ph']}' at {ev['ts']} is not inside a slice of its thread")
    return problems
