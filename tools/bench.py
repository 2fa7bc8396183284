"""The whole-pipeline benchmark: every model on every preset target; writes docs/benchmarks.md.

    python tools/bench.py                                   # everything (about 20 minutes on 2 cores)
    python tools/bench.py --quick                           # smoke subset in about 30 s
    python tools/bench.py --models resnet50,moe --targets edge-soc --time-limit 5 --json results.json

Per (model, target): one ``hetc.pipeline.build`` with CP-SAT and ``validate=True`` (placement, makespan, bound,
gap, per-stage compile time, memory peak vs bound, functional simulation, error vs onnxruntime), plus one
``hetc.schedule.schedule`` per baseline strategy (HEFT, greedy, single:cpu) on the graph the build scheduled
(tiled, views in place). The functional simulation is then run again warm (on the prepared simulation
``simulate`` keeps, as onnxruntime's own session is after its warm-up) and compared with the original model in onnxruntime, 1 intra-op thread and default
threads, medians of ``--repeat`` runs. A build that fails is recorded with its error message.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
BASELINES = ("heft", "greedy", "single:cpu")
QUICK = {"models": ["tiny_cnn", "moe"], "targets": ["edge-soc"], "baselines": ["heft"], "time_limit": 2.0}
COMPILE_STAGES = ("import", "passes", "schedule", "memory", "codegen")
GOALS = {"cpsat_over_heft": 0.85, "gap": 0.05, "densenet_schedule_s": 10.0, "memory_ratio": 1.02, "sim_over_ort": 2.0}


@dataclass
class Case:
    """Everything measured for one (model, target); ``None`` where a build failed before producing it."""

    model: str
    target: str
    nodes: int | None = None
    placement: dict[str, int] = field(default_factory=dict)
    makespan_us: dict[str, float | str] = field(default_factory=dict)  # strategy -> us, or the error message
    planned_makespan_us: float | None = None  # the CP-SAT schedule as memory planning left it (spills re-time it)
    lower_bound_us: float | None = None
    gap: float | None = None
    status: str | None = None
    time_limit_s: float | None = None
    cpsat_hint_heft_us: float | None = None  # the HEFT schedule CP-SAT started from, as the build reports it
    stage_s: dict[str, float] = field(default_factory=dict)
    memory: dict[str, dict[str, int]] = field(default_factory=dict)
    simulated_makespan_us: float | None = None
    sim_cold_s: float | None = None
    sim_warm_s: float | None = None
    ort_1thread_s: float | None = None
    ort_default_s: float | None = None
    validation: dict[str, Any] | None = None
    error: str | None = None          # the build failed: most columns stay empty
    timing_error: str | None = None   # the build passed but re-simulating or running onnxruntime failed
    wall_s: float = 0.0

    def ratio(self, a: str, b: str) -> float | None:
        x, y = self.makespan_us.get(a), self.makespan_us.get(b)
        return x / y if isinstance(x, float) and isinstance(y, float) and y > 0 else None


def model_paths() -> dict[str, Path]:
    """models/*.onnx first (small, quick to read in the tables), then onnx's light models."""
    paths = {p.stem: p for p in sorted((REPO / "models").glob("*.onnx"))}
    paths.update({p.stem.removeprefix("light_"): p for p in sorted(LIGHT_DIR.glob("light_*.onnx"))})
    return paths


def ort_seconds(path: Path, inputs: dict[str, np.ndarray], threads: int | None, repeat: int) -> float:
    """Median wall time of ``session.run`` on ``inputs`` after one warm-up run (threads None: ORT's default)."""
    import onnxruntime as ort

    from hetc.ir import EXPORT_IR_VERSION

    model = onnx.load(str(path))
    model.ir_version = min(model.ir_version, EXPORT_IR_VERSION)  # onnxruntime refuses onnx 1.23's default
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the light models' unused-initializer warnings are noise here
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
    session.run(None, feeds)
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@dataclass
class StagePrinter:
    """A ``ProgressSink`` for ``build``: one line per finished stage, so a long stage is visibly the one running."""

    say: Callable[[str], None]

    def stage_started(self, stage: str) -> None:
        pass

    def stage_message(self, stage: str, message: str) -> None:
        pass

    def stage_finished(self, stage: str, seconds: float, detail: str, ok: bool = True) -> None:
        self.say(f"  {stage} {seconds:.2f} s" + (f": {detail}" if detail else ""))


def run_case(name: str, path: Path, target: str, baselines: list[str], time_limit_s: float | None,
             repeat: int, say: Callable[[str], None],
             ort_cache: dict[tuple[str, int | None], float] | None = None) -> Case:
    """Measure one (model, target); any HetcError (or other failure) of a build lands in the Case.

    ``repeat``: timed runs of the warm simulation and of onnxruntime (medians); ``ort_cache`` keeps onnxruntime's
    time per (model, threads): it does not depend on the target."""
    from hetc.frontend import load_onnx
    from hetc.passes import optimize
    from hetc.pipeline import BuildOptions, build
    from hetc.schedule import default_time_limit, schedule
    from hetc.sim import simulate
    from hetc.target import load_target
    from hetc.validate import make_inputs

    case, began = Case(name, target), time.perf_counter()
    try:
        graph, target_obj = optimize(load_onnx(path)), load_target(target)
    except Exception as error:  # noqa: BLE001 - a model the frontend refuses is a result, not a crash
        case.error = f"import: {type(error).__name__}: {error}"
        return case
    case.nodes = len(graph.nodes)
    case.time_limit_s = time_limit_s if time_limit_s is not None else default_time_limit(case.nodes)
    say(f"cpsat (limit {case.time_limit_s:g} s)")
    try:
        result = build(path, BuildOptions(target=target, scheduler="cpsat", time_limit_s=time_limit_s, validate=True),
                       progress=StagePrinter(say))
    except Exception as error:  # noqa: BLE001
        case.makespan_us["cpsat"] = case.error = f"{type(error).__name__}: {error}"
        case.wall_s = time.perf_counter() - began
        return case
    # The baselines schedule the graph CP-SAT scheduled (tiled, Concat/Split/Slice as views): the same problem.
    for strategy in baselines:
        try:
            case.makespan_us[strategy] = schedule(result.graph, target_obj, strategy).makespan_ns / 1000
        except Exception as error:  # noqa: BLE001
            case.makespan_us[strategy] = f"{type(error).__name__}: {error}"
    say(", ".join(f"{s} {_fmt_us(v)}" for s, v in case.makespan_us.items()))
    summary = result.summary
    case.placement, case.memory = summary["placement"], summary["memory"]
    # The scheduler's own figures, comparable with the baselines (kept apart in the shipped schedule's
    # statistics when memory planning re-timed it); the summary's makespan is the shipped one.
    sched = result.schedule
    own = sched.stats.details.get("solver_own") or {"objective_ns": sched.makespan_ns, "gap": sched.gap,
                                                    "status": sched.stats.status}
    case.makespan_us["cpsat"] = own["objective_ns"] / 1000
    case.planned_makespan_us = float(summary["makespan_us"])
    case.lower_bound_us, case.gap, case.status = sched.lower_bound_ns / 1000, own["gap"], own["status"]
    case.cpsat_hint_heft_us = summary["solver"].get("heft_makespan_us")
    case.stage_s, case.validation = summary["stage_s"], summary.get("validation")
    case.simulated_makespan_us = summary.get("simulated_makespan_us")
    case.sim_cold_s = result.sim.stats["wall_s"] if result.sim else None
    say(f"cpsat {_fmt_us(case.makespan_us['cpsat'])} (gap {case.gap:.1%}); timing the simulator and onnxruntime")
    inputs = make_inputs(result.graph, seed=0)  # the inputs build() validated with (input_seed 0)
    ort_cache = {} if ort_cache is None else ort_cache
    try:
        case.sim_warm_s = statistics.median(simulate(result.bundle, inputs, functional=True).stats["wall_s"]
                                            for _ in range(repeat))
        for threads in (1, None):
            if (name, threads) not in ort_cache:
                ort_cache[name, threads] = ort_seconds(path, inputs, threads, repeat)
        case.ort_1thread_s, case.ort_default_s = ort_cache[name, 1], ort_cache[name, None]
    except Exception as error:  # noqa: BLE001
        case.timing_error = f"{type(error).__name__}: {error}"
    case.wall_s = time.perf_counter() - began
    return case


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def memory_ratios(cases: list[Case], memory: str | None = None) -> list[float]:
    """peak/bound of every memory (or the one named) a build used: an empty memory has no meaningful ratio."""
    return [m["peak_bytes"] / m["lower_bound_bytes"] for c in cases for name, m in c.memory.items()
            if m["lower_bound_bytes"] > 0 and memory in (None, name)]


def headline(cases: list[Case], targets: list[str]) -> list[str]:
    """The summary lines, each goal reported as met or not met."""
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT met")

    from hetc.target import load_target

    lines = []
    for target in targets:
        ratios = [c.ratio("cpsat", "heft") for c in cases if c.target == target]
        g = geomean([r for r in ratios if r is not None])
        single = len(load_target(target).devices) == 1
        lines.append(f"CP-SAT / HEFT makespan, geometric mean on {target}: "
                     f"{'n/a' if g is None else f'{g:.3f}'} over {sum(r is not None for r in ratios)} models "
                     f"(goal <= {GOALS['cpsat_over_heft']}: "
                     f"{verdict(None if g is None else g <= GOALS['cpsat_over_heft'])})"
                     + ("; one device, so every strategy finds the same schedule" if single else ""))
    solved = [c for c in cases if c.gap is not None]
    close = sum(c.gap <= GOALS["gap"] for c in solved)
    optimal = sum(c.status == "OPTIMAL" for c in solved)
    per_target = ", ".join(f"{t} {sum(c.gap <= GOALS['gap'] for c in solved if c.target == t)}/"
                           f"{sum(c.target == t for c in solved)}" for t in targets)
    lines.append(f"CP-SAT gap to the lower bound <= 5%: {close}/{len(solved)} builds ({per_target}; "
                 f"{optimal} proved optimal)")
    dense = {c.target: c.stage_s.get("schedule") for c in cases if c.model == "densenet121" and c.stage_s}
    if dense:
        worst = max(dense.values())
        lines.append("DenseNet-121 schedule stage: " + ", ".join(f"{t} {s:.1f} s" for t, s in dense.items())
                     + f" (goal <= {GOALS['densenet_schedule_s']:g} s: "
                       f"{verdict(worst <= GOALS['densenet_schedule_s'])})")
    m = geomean(memory_ratios(cases))
    names = sorted({name for c in cases for name in c.memory})
    by_memory = ", ".join(f"{name} {g:.4f}" for name in names
                          if (g := geomean(memory_ratios(cases, name))) is not None)
    lines.append(f"memory peak / lower bound, geometric mean over {len(memory_ratios(cases))} used memories: "
                 f"{'n/a' if m is None else f'{m:.4f}'} (goal <= {GOALS['memory_ratio']}: "
                 f"{verdict(None if m is None else m <= GOALS['memory_ratio'])}); by memory: {by_memory}")
    retimed = [(_div(c.planned_makespan_us, c.makespan_us["cpsat"]), c) for c in cases if c.planned_makespan_us]
    if retimed:
        worst, case = max(retimed, key=lambda rc: rc[0])
        lines.append(f"makespan after / before memory planning (CP-SAT builds), geometric mean: "
                     f"{geomean([r for r, _ in retimed]):.4f}, worst {worst:.4f} ({case.model} on {case.target})")
    bounded = [c for c in cases if c.planned_makespan_us and c.lower_bound_us]
    if bounded:   # a bound above a plan that fits would make every gap printed a lie
        above = [f"{c.model} on {c.target}" for c in bounded if c.lower_bound_us > c.planned_makespan_us]
        lines.append(f"lower bound at or below the shipped plan: {len(bounded) - len(above)}/{len(bounded)} builds"
                     + (f" (above: {', '.join(above)})" if above else ""))
    light = {p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx")}
    for label, key in (("default threads", "ort_default_s"), ("1 thread", "ort_1thread_s")):
        timed = [c for c in cases if c.sim_warm_s and getattr(c, key)]
        r = geomean([c.sim_warm_s / getattr(c, key) for c in timed])
        r_light = geomean([c.sim_warm_s / getattr(c, key) for c in timed if c.model in light])
        goal = f"goal <= {GOALS['sim_over_ort']:g}x: {verdict(None if r is None else r <= GOALS['sim_over_ort'])}"
        lines.append(f"functional simulation (warm) / onnxruntime {label}, geometric mean over {len(timed)} builds: "
                     f"{'n/a' if r is None else f'{r:.2f}x'} ({goal}); onnx's light models alone: "
                     f"{'n/a' if r_light is None else f'{r_light:.2f}x'}")
    passed = [c for c in cases if c.validation]
    lines.append(f"validation against onnxruntime passed: {sum(c.validation['passed'] for c in passed)}/{len(passed)}"
                 f"; builds failed: {sum(c.error is not None for c in cases)}/{len(cases)}")
    return lines


def _fmt_us(v: float | str | None) -> str:
    if v is None:
        return ""
    return f"{v:,.1f}" if isinstance(v, float) else "error"


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


Table = tuple[str, str, list[str], list[list[str]]]  # heading, note, column headers, rows


def numeric_columns(headers: list[str], rows: list[list[str]]) -> list[bool]:
    """Columns whose every filled cell is a number (right-aligned); the others are text."""
    def number(cell: str) -> bool:
        try:
            float(cell.replace(",", "").rstrip("%x"))
            return True
        except ValueError:
            return False
    return [all(number(r[i]) for r in rows if r[i]) for i in range(len(headers))]


def tables(cases: list[Case], strategies: list[str]) -> list[Table]:
    """The result tables, as strings, shared by the console and the Markdown output."""
    ok = [c for c in cases if c.error is None]
    sched = [[c.model, c.target, _fmt(c.nodes, "d"),
              " ".join(f"{d}:{n}" for d, n in c.placement.items() if n) or "",
              *[_fmt_us(c.makespan_us.get(s)) for s in strategies], _fmt_us(c.lower_bound_us),
              _fmt(c.gap, ".1%"), c.status or "", _fmt(c.ratio("cpsat", "heft"), ".3f"), _fmt(c.time_limit_s, "g")]
             for c in cases]
    stages = [[c.model, c.target, *[_fmt(c.stage_s.get(s), ".2f") for s in COMPILE_STAGES],
               _fmt(sum(c.stage_s.get(s, 0.0) for s in COMPILE_STAGES), ".2f")] for c in ok]
    mem = [[c.model, c.target, name, f"{m['peak_bytes'] / 2**20:.3f}", f"{m['lower_bound_bytes'] / 2**20:.3f}",
            _fmt(m["peak_bytes"] / m["lower_bound_bytes"] if m["lower_bound_bytes"] else None, ".4f"),
            f"{m['capacity_bytes'] / 2**20:.1f}", f"{m['spilled_bytes'] / 2**20:.3f}"]
           for c in ok for name, m in c.memory.items() if m["peak_bytes"] or m["lower_bound_bytes"]]
    sim = [[c.model, c.target, _fmt_us(c.makespan_us.get("cpsat")), _fmt_us(c.planned_makespan_us),
            _fmt_us(c.simulated_makespan_us), _fmt(_div(c.simulated_makespan_us, c.planned_makespan_us), ".3f"),
            _fmt(c.sim_cold_s, ".3f"), _fmt(c.sim_warm_s, ".3f"), _fmt(_ms(c.ort_1thread_s), ".2f"),
            _fmt(_ms(c.ort_default_s), ".2f"), _fmt(_div(c.sim_warm_s, c.ort_1thread_s), ".2f"),
            _fmt(_div(c.sim_warm_s, c.ort_default_s), ".2f"),
            _fmt(c.validation and c.validation["max_abs_err"], ".2e"),
            _fmt(c.validation and c.validation["max_rel_err"], ".2e"),
            "" if not c.validation else ("pass" if c.validation["passed"] else "FAIL")] for c in ok]
    result: list[Table] = [
        ("Schedules", "Makespans in µs of each strategy's schedule of the same graph (the one the CP-SAT build "
         "scheduled: tiled, views in place), before memory planning (the shipped schedules: "
         "`tools/bench_shipped.py`); nodes: after the passes, before tiling; bound: the scheduler's lower bound (CP-SAT's own bound when better); gap and status: CP-SAT's; placement: nodes per "
         "device in the CP-SAT "
         "schedule; limit: the CP-SAT time limit used. Status HINT: CP-SAT kept its HEFT starting point.",
         ["model", "target", "nodes", "placement", *strategies, "bound", "gap", "status", "cpsat/heft", "limit s"],
         sched),
        ("Compile time", "Wall seconds per stage of the CP-SAT build (`BuildResult.summary['stage_s']`); total is "
         "import to codegen.", ["model", "target", *COMPILE_STAGES, "total"], stages),
        ("Memory", "MiB per memory the CP-SAT build used: peak address in use vs the lower bound (most bytes live at "
         "once), capacity and bytes spilled to DRAM.",
         ["model", "target", "memory", "peak", "lower bound", "peak/bound", "capacity", "spilled"], mem),
        ("Simulation and validation", "Makespan of the CP-SAT schedule as scheduled, as planned (after memory "
         "planning, whose spills and reuse re-time it: the bundle's plan) and as simulated; sim s: wall time of "
         "the functional simulation, cold = its first run inside the build (the simulation prepared: timing run, "
         "race check, memories, bound kernels, per-node onnxruntime sessions), warm = median of the next runs, "
         "which reuse that preparation; ORT: the original model in onnxruntime, median of the timed runs after one "
         "warm-up, "
         "1 intra-op thread (1t) and default threads; errors and pass/fail from `hetc.validate` vs onnxruntime.",
         ["model", "target", "scheduled µs", "planned µs", "simulated µs", "sim/plan", "sim cold s", "sim warm s",
          "ORT 1t ms",
          "ORT default ms", "warm/ORT 1t", "warm/ORT default", "max abs err", "max rel err", "valid"], sim),
    ]
    errors = [[c.model, c.target, c.error or ""] for c in cases if c.error] + \
             [[c.model, c.target, f"{s}: {v}"] for c in cases for s, v in c.makespan_us.items()
              if isinstance(v, str) and c.error is None] + \
             [[c.model, c.target, f"timing: {c.timing_error}"] for c in cases if c.timing_error]
    if errors:
        result.append(("Failures", "Builds, baseline schedules or timings that raised, with their message.",
                       ["model", "target", "error"], errors))
    return result


def _ms(s: float | None) -> float | None:
    return None if s is None else s * 1000


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def machine() -> dict[str, Any]:
    import onnxruntime
    import ortools

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "ortools": ortools.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": os.getloadavg()}


def markdown(cases: list[Case], strategies: list[str], targets: list[str], info: dict[str, Any], argv: list[str],
             total_s: float) -> str:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"

    load = " / ".join(f"{x:.1f}" for x in info["load_before"]) + " before, " + \
           " / ".join(f"{x:.1f}" for x in info["load_after"]) + " after (1 / 5 / 15 min)"
    out = ["# Benchmarks", "",
           "Generated by `tools/bench.py`; every figure below comes from one run of it. Regenerate with:", "",
           "```", " ".join(["python tools/bench.py", *argv]), "```", "",
           f"* date: {info['date']}; whole run {total_s:.0f} s",
           f"* machine: {info['nproc']} cores, {info['cpu']}; load average {load}"
           + (" (the machine was shared with other jobs: wall times are noisy)"
              if max(info["load_before"][0], info["load_after"][0]) > 0.5 * info["nproc"] else ""),
           f"* Python {info['python']}, onnxruntime {info['onnxruntime']}, ortools {info['ortools']}, "
           f"onnx {info['onnx']}, numpy {info['numpy']}",
           "* CP-SAT time limit: " + (f"{info['time_limit']:g} s" if info["time_limit"] else
                                      "the scheduler's default, `default_time_limit(nodes)` = "
                                      "min(10, max(2, nodes/10)) s"),
           "", "## Summary", "", *[f"* {line}" for line in headline(cases, targets)], "",
           "The functional simulator runs NPU/DSP nodes on hetc's numpy kernels and CPU nodes in single-node "
           "onnxruntime sessions (cached; `HETC_ORT_THREADS` intra-op threads, default min(4, cores)). The "
           "sim/ORT goal is "
           "judged separately against onnxruntime with 1 intra-op thread and with its default thread count "
           f"({info['nproc']} here); on a loaded machine the default can be the slower of the two. Sim times are of "
           "the warm run; onnxruntime's are timed once per model (they do not depend on the target).", ""]
    for heading, note, headers, rows in tables(cases, strategies):
        out += [f"## {heading}", "", note, "", row(headers),
                row(["---:" if n else "---" for n in numeric_columns(headers, rows)]), *map(row, rows), ""]
    out += ["## Per-stage benchmarks", "",
            "* scheduling strategies and compile-time scaling: `tools/bench_schedule.py`, "
            "[docs/scheduling.md](scheduling.md#results)",
            "* memory planning (packer vs lower bound, random interval sets): `tools/bench_memory.py`, "
            "[docs/memory.md](memory.md#benchmark)",
            "* packer vs Arm Vela's HillClimb allocator: `tools/bench_packing.py`, "
            "[docs/memory.md](memory.md#packer-vs-arm-velas-hillclimb-toolsbench_packingpy)",
            "* the packer's work rate, which `WORK_PER_SECOND` should equal: `tools/packing_rate.py`, "
            "[docs/memory.md](memory.md)",
            "* kernel speed against onnxruntime: `tools/kernel_speed.py`, [docs/kernels.md](kernels.md#speed)",
            "* simulator event loop vs SimPy and functional simulation: `tools/bench_sim.py`, "
            "[docs/bundle-format.md](bundle-format.md#results)",
            "* design-space sweep, serial against local Ray, and resume after a kill: `tools/bench_sweep.py`, "
            "[docs/sweep.md](sweep.md)",
            "* the shipped schedules, CP-SAT against HEFT after memory planning: `tools/bench_shipped.py`", ""]
    return "\n".join(out)


def print_tables(cases: list[Case], strategies: list[str], targets: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console(width=None if sys.stdout.isatty() else 250)  # a log file gets unfolded rows
    for heading, note, headers, rows in tables(cases, strategies):
        table = RichTable(title=f"{heading}: {note}", title_justify="left")
        for h, numeric in zip(headers, numeric_columns(headers, rows)):
            table.add_column(h, justify="right" if numeric else "left", overflow="fold")
        for r in rows:
            table.add_row(*r)
        console.print(table)
    for line in headline(cases, targets):
        console.print(f"* {line}", highlight=False)


def run_benchmark(models: list[str], targets: list[str], baselines: list[str], time_limit_s: float | None,
                  repeat: int = 3, progress: Callable[[str], None] = print) -> list[Case]:
    """Measure every (model, target); models are names from ``model_paths()``."""
    from hetc.errors import OptionError

    paths = model_paths()
    unknown = [m for m in models if m not in paths]
    if unknown:
        raise OptionError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(paths)}")
    cases, total, ort_cache = [], len(models) * len(targets), {}
    for target in targets:
        for name in models:
            label = f"[{len(cases) + 1}/{total}] {name} on {target}"
            progress(f"{label}: start")
            case = run_case(name, paths[name], target, baselines, time_limit_s, repeat,
                            lambda msg, label=label: progress(f"{label}: {msg}"), ort_cache)
            progress(f"{label}: {'FAILED: ' + case.error if case.error else 'done'} ({case.wall_s:.1f} s)")
            cases.append(case)
    return cases


KEPT_SECTIONS = (  # (begin, end) markers of sections other tools write into the file
    ("<!-- timing engine: written by tools/bench_sim.py", "<!-- end of the timing-engine section -->"),
    ("<!-- sweep: written from tools/bench_sweep.py", "<!-- end of the sweep section -->"),
    ("<!-- packer: written from tools/bench_packing.py", "<!-- end of the packer section -->"),
    ("<!-- shipped: written from tools/bench_shipped.py", "<!-- end of the shipped section -->"),
    ("<!-- tiling: written from tools/bench_tiling.py", "<!-- end of the tiling section -->"),
    ("<!-- llm: written from tools/bench_llm.py", "<!-- end of the llm section -->"),
    ("<!-- int8: written from tools/bench_int8.py", "<!-- end of the int8 section -->"),
)


def keep_timing_section(path: Path, text: str) -> str:
    """``text`` with the sections that other tools (``tools/bench_sim.py --write-doc``, ``tools/bench_sweep.py``)
    put in the previous file at ``path`` (between their markers), before the per-stage list."""
    old = path.read_text() if path.exists() else ""
    for begin, end in KEPT_SECTIONS:
        if begin not in old or end not in old or "## Per-stage benchmarks" not in text:
            continue
        section = old[old.index(begin):old.index(end) + len(end)]
        at = text.index("## Per-stage benchmarks")
        text = text[:at] + section + "\n\n" + text[at:]
    # a heading written by hand outside every kept section would vanish silently: refuse instead
    lost = [line for line in old.splitlines() if line.startswith("#") and line not in text]
    if lost:
        raise LostHeadings(path, lost, text)
    return text


class LostHeadings(Exception):
    """Regenerating the file would drop headings written outside every kept section."""

    def __init__(self, path: Path, lost: list[str], text: str):
        super().__init__(f"regenerating {path} would drop {len(lost)} heading(s) written outside the kept "
                         f"sections ({', '.join(repr(h) for h in lost[:3])}); move them between a section's "
                         "markers (KEPT_SECTIONS) and merge the new text")
        self.text = text


def regenerate_args(argv: list[str]) -> list[str]:
    """The command line without its output paths (--out, --json), for the doc's "regenerate with" line."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--out", "--json"):
            skip = True
        elif not arg.startswith(("--out=", "--json=")):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    from hetc.target import list_presets

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke subset: tiny_cnn and moe on edge-soc, "
                                                             "HEFT and CP-SAT with a 2 s limit")
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--targets", default="", help="comma-separated presets (default: all)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="CP-SAT limit in s (default: the scheduler's default_time_limit(nodes))")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs (median) of the warm simulation and of onnxruntime after its warm-up")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"), help="Markdown output ('' for none)")
    parser.add_argument("--json", default="", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m] or (QUICK["models"] if args.quick else list(model_paths()))
    targets = [t for t in args.targets.split(",") if t] or (QUICK["targets"] if args.quick else
                                                             [name for name, _ in list_presets()])
    baselines = QUICK["baselines"] if args.quick else list(BASELINES)
    time_limit = args.time_limit if args.time_limit is not None else (QUICK["time_limit"] if args.quick else None)
    info = machine()
    info["time_limit"] = time_limit
    print(f"{len(models)} models x {len(targets)} targets; CP-SAT time limit: "
          f"{f'{time_limit:g} s' if time_limit else 'scheduler default min(10, max(2, nodes/10)) s'}; "
          f"load average {info['load_before'][0]:.1f}", flush=True)
    began = time.perf_counter()
    cases = run_benchmark(models, targets, baselines, time_limit, args.repeat,
                          lambda msg: print(msg, flush=True))
    total_s = time.perf_counter() - began
    info["load_after"] = os.getloadavg()
    strategies = [s for s in ("single:cpu", "greedy", "heft") if s in baselines] + ["cpsat"]
    print_tables(cases, strategies, targets)
    print(f"whole run: {total_s:.1f} s")
    if args.json:
        raw = {"machine": info, "total_s": total_s, "headline": headline(cases, targets),
               "cases": [asdict(c) for c in cases]}
        Path(args.json).write_text(json.dumps(raw, indent=1))
        print(f"wrote {args.json}")
    if args.out:
        shown = regenerate_args(argv if argv is not None else sys.argv[1:])
        text = markdown(cases, strategies, targets, info, shown, total_s)
        try:
            Path(args.out).write_text(keep_timing_section(Path(args.out), text))
        except LostHeadings as lost:   # the run is not lost: its text goes beside the file
            Path(args.out + ".new").write_text(lost.text)
            print(f"error: {lost}; the new text is in {args.out}.new", file=sys.stderr)
            return 1
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
