"""The compile pipeline: import -> passes -> schedule -> memory -> codegen [-> simulate -> validate] [-> gantt].

``build()`` is what ``hetc build`` runs; the CLI only parses flags and prints. Nothing touches the disk until
``BuildResult.save()``, which writes the whole bundle atomically.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import onnx

from hetc.codegen import Bundle, EmitOptions, emit
from hetc.codegen.build_info import MANIFEST, without_wall_clock
from hetc.errors import OptionError
from hetc.frontend import import_model, load_onnx
from hetc.frontend.loader import read_model_file
from hetc.ir import Graph
from hetc.ir.predicates import gate_routing
from hetc.memory import MemoryPlan
from hetc.passes import optimize
from hetc.passes.qdq import QDQ_NOTE
from hetc.report import GANTT_FORMATS, Timeline, gantt_files, report_text
from hetc.planning import SchedulingChoices, plan_tiled
from hetc.schedule import IdleAcceleratorsWarning, Schedule, check_strategy, idle_accelerators_warning, placement_rows
from hetc.schedule.expected import routing_choices
from hetc.sim import SimResult, simulate
from hetc.stages import ProgressSink, StageClock
from hetc.target import Target, load_target
from hetc.target.lowering import fusion_check, lowering_rules, packs_biases
from hetc.version import __version__
from hetc.validate import ValidationReport, check_npz_file, load_inputs_npz, make_inputs, validate
from hetc.validate.weights import WEIGHT_CHOICES, randomize_weights
from hetc.validate.integer import IntegerValidationReport

PRECISIONS = ("fp32", "fp16")


@dataclass
class BuildOptions:
    target: str | Path | Target = "edge-soc"   # a preset, a TOML file, or a loaded Target (hetc sweep)
    scheduler: str = "cpsat"
    time_limit_s: float | None = None
    seed: int = 0
    num_workers: int = 2
    shapes: dict[str, tuple[int, ...]] | None = None
    dims: dict[str, int] | None = None
    validate: bool = False                 # simulate functionally and compare with onnxruntime
    inputs: str | Path | None = None       # .npz of inputs for --validate (default: seeded random)
    input_seed: int = 0
    weights: str = "model"                 # "random": seeded fan-in-scaled weights (hetc.validate.weights)
    precision: str = "fp32"                # NPU arithmetic in the functional simulation
    gantt: Sequence[str] = ()              # formats written into the bundle
    tiling: bool = True                    # cut nodes too big for a scratchpad into tiles (hetc.target.tiling)


@dataclass
class BuildResult:
    model: str | Path | onnx.ModelProto
    graph: Graph
    target: Target
    schedule: Schedule                     # the one schedule: ``plan.schedule``, emitted, simulated, reported
    plan: MemoryPlan
    bundle: Bundle
    summary: dict[str, Any]
    sim: SimResult | None = None
    validation: ValidationReport | None = None
    placement: list[dict[str, Any]] = field(default_factory=list)

    def save(self, directory: str | Path, force: bool = False) -> Path:
        return self.bundle.save(directory, force=force)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(model: str | Path | onnx.ModelProto, options: BuildOptions | None = None,
          progress: ProgressSink | None = None) -> BuildResult:
    """Compile ``model`` (a path or an in-memory ModelProto): every stage of DESIGN.md, returning the
    artifacts and the JSON summary."""
    options = options or BuildOptions()
    gantt = check_gantt_formats(options.gantt)
    clock = StageClock(progress)
    target = options.target if isinstance(options.target, Target) else load_target(options.target)
    check_strategy(options.scheduler, target)
    if options.precision not in PRECISIONS:
        raise OptionError(f"unknown precision '{options.precision}'; choose one of: {', '.join(PRECISIONS)}")
    if isinstance(options.inputs, (str, Path)):
        check_npz_file(options.inputs)   # a wrong --inputs fails now, not after the compile
    if options.weights not in WEIGHT_CHOICES:
        raise OptionError(f"unknown weights '{options.weights}'; choose one of: {', '.join(WEIGHT_CHOICES)}")
    with clock.stage("import") as say:
        given = model   # what the bundle names (its sha256): random weights derive from it and the seed
        if options.weights == "random":  # the built and the reference model both get the same random weights
            model = randomize_weights(model if isinstance(model, onnx.ModelProto) else read_model_file(Path(model)),
                                      options.input_seed)
        if isinstance(model, onnx.ModelProto):
            graph = import_model(model, shapes=options.shapes, dims=options.dims)
        else:
            graph = load_onnx(model, shapes=options.shapes, dims=options.dims)
        if isinstance(given, onnx.ModelProto):
            sha = hashlib.sha256(given.SerializeToString(deterministic=True)).hexdigest()
            model_name = given.graph.name or "model"
        else:
            sha, model_name = file_sha256(Path(given)), Path(given).name
        say(f"{len(graph.nodes)} nodes")
    with clock.stage("passes") as say:
        stats: dict[str, dict[str, float]] = {}
        # a single-device strategy's graph is rewritten for that device alone
        usable = [options.scheduler[len("single:"):]] if options.scheduler.startswith("single:") else None
        graph = optimize(graph, stats, lowerings=lowering_rules(target, usable),
                         fusion_check=fusion_check(target, usable), pack_biases=packs_biases(target, usable))
        qdq = graph.metadata.get(QDQ_NOTE)   # what the QDQ lowering made integer, and why the rest stayed float
        lowered = int(stats.get("lower_for_target", {}).get("changed", 0))
        say(f"{len(graph.nodes)} nodes after folding" + (f"; {qdq}" if qdq else "")
            + (f"; {lowered} node(s) lowered for {target.name} (docs/targets.md, \"Lowering\")" if lowered else ""))
    choices = SchedulingChoices(options.scheduler, options.time_limit_s, options.num_workers, options.seed,
                                options.tiling)
    graph, plan = plan_tiled(graph, target, choices, clock)
    sched = plan.schedule   # the one schedule from here on: emitted, simulated, reported, charted
    rows = placement_rows(graph, target, sched)
    idle = idle_accelerators_warning(graph, target, sched)
    if idle is not None:  # a build that silently runs everything on the CPU looks like a working one
        warnings.warn(idle, IdleAcceleratorsWarning, stacklevel=2)
    with clock.stage("codegen") as say:
        seed = options.input_seed if options.weights == "random" else None
        bundle = emit(graph, plan, target, EmitOptions(model_sha256=sha, model_name=model_name,
                                                       placement_rows=tuple(rows), random_weights_seed=seed))
        say(f"{sum(len(p.instructions) for p in bundle.programs.values())} instructions on "
            f"{len(bundle.programs)} engines")
    sim = validation = None
    gated = sum(1 for t in sched.tasks if t.when is not None)   # predicated tasks (hetc.ir.predicates)
    predicated: dict[str, Any] = {"predicated_tasks": gated} if gated else {}
    if options.validate:
        with clock.stage("simulate") as say:
            inputs = (load_inputs_npz(options.inputs, graph) if options.inputs
                      else make_inputs(graph, seed=options.input_seed))
            sim = simulate(bundle, inputs, functional=True, precision=options.precision)
            say(f"simulated makespan {sim.makespan_ns / 1000:,.1f} µs")
            if gated:   # the time depends on the routing
                predicated.update(_predicated_makespans(bundle, graph, sim, options))
                say(f"predicated: expected {predicated['expected_us']:,.1f} µs over {predicated['draws']} "
                    f"input(s), {predicated['uniform_us']:,.1f} µs over {predicated['routings']} uniform "
                    f"routing(s), worst case {predicated['worst_case_us']:,.1f} µs")
        with clock.stage("validate") as say:
            # The values at cut nodes, for an output that misses the rule end to end (hetc.validate.anchors):
            # simulated again on demand, from the simulation simulate() keeps.
            def probe(names: frozenset[str]) -> dict[str, Any]:
                return simulate(bundle, inputs, functional=True, precision=options.precision, probes=names).probes
            validation = validate(model, sim.outputs or {}, inputs, options.precision, probe=probe)
            ratio = validation.max_ratio
            say(("passed" if validation.passed else "FAILED") + f", max abs err {validation.max_abs_err:.3g}"
                + (f", error {ratio:.3g}x onnxruntime's" if ratio is not None else "")
                + (f"; {validation.headline}" if isinstance(validation, IntegerValidationReport) else ""),
                ok=validation.passed)
    files: dict[str, bytes] = {}
    if gantt:
        with clock.stage("gantt") as say:
            timeline = (Timeline.from_simulation(sim, sched, plan, target, title=model_name) if sim is not None
                        else Timeline.from_schedule(sched, graph, plan, target, title=model_name))
            files = gantt_files(timeline, gantt)
            say(", ".join(files))
    summary = make_summary(model_name, graph, target, plan, clock, sim, validation)
    if predicated:   # (not simulated: only the count; the planned makespan is the worst case)
        summary["predicated"] = predicated
    # The bundle keeps the whole summary; its wall-clock figures go to build-info.json, out of the hashed files.
    reproducible = without_wall_clock(MANIFEST, {"summary": summary})["summary"]
    report = report_text(sched, graph, plan, target, sim, validation, summary=reproducible)
    bundle = bundle.with_summary(summary).with_report(report).with_files(files)
    return BuildResult(model=model, graph=graph, target=target, schedule=sched, plan=plan, bundle=bundle,
                       summary=summary, sim=sim, validation=validation, placement=rows)


def check_gantt_formats(formats: Sequence[str]) -> list[str]:
    bad = [f for f in formats if f not in GANTT_FORMATS]
    if bad:
        raise OptionError(f"unknown Gantt format {', '.join(map(repr, bad))}; choose from {', '.join(GANTT_FORMATS)}")
    return list(dict.fromkeys(formats))


def make_summary(model_name: str, graph: Graph, target: Target, plan: MemoryPlan, clock: StageClock,
                 sim: SimResult | None = None, validation: ValidationReport | None = None) -> dict[str, Any]:
    """The JSON summary of DESIGN.md (``hetc build --json`` and ``manifest.json``'s ``summary``), of the one
    schedule that ships (``plan.schedule``): ``gap`` and ``solver`` (status, makespan, gap) describe it; when
    memory planning re-timed the solver's schedule, ``solver.own`` has the solver's own status, makespan and
    gap (and ``superseded``, where HEFT's plan shipped instead); ``solver.scheduled_us`` is the shipped schedule's
    makespan as its scheduler made it, before memory planning."""
    sched = plan.schedule
    placement = {d: 0 for d in target.devices}
    for device in sched.placement.values():
        placement[device] += 1
    summary: dict[str, Any] = {
        "model": model_name,
        "hetc_version": __version__,
        "target": target.name,
        "scheduler": sched.stats.strategy,
        "nodes": len(graph.nodes),
        "placement": placement,
        "makespan_us": sched.makespan_ns / 1000,
        "lower_bound_us": sched.lower_bound_ns / 1000,
        "gap": round(sched.gap, 6),
        "solver": {"status": sched.stats.status, "wall_s": round(sched.stats.wall_s, 3),
                   "heft_makespan_us": _heft_us(sched)},
        "memory": {m: {"peak_bytes": s.peak_bytes, "lower_bound_bytes": s.lower_bound_bytes,
                       "capacity_bytes": s.capacity_bytes, "spilled_bytes": s.spilled_bytes,
                       **({} if s.scheduled_live_bytes is None else {"scheduled_live_bytes": s.scheduled_live_bytes})}
                   for m, s in plan.stats.items()},
        "compile_s": round(clock.total, 3),
        "stage_s": {k: round(v, 3) for k, v in clock.seconds.items()},
    }
    summary["solver"]["makespan_us"] = sched.stats.objective_ns / 1000
    summary["solver"]["gap"] = round(sched.stats.gap, 6)
    own = sched.stats.details.get("solver_own")
    if own is not None:
        summary["solver"]["own"] = {"status": own["status"], "makespan_us": own["objective_ns"] / 1000,
                                    "gap": own["gap"]}
        if "heft_after_planning" in sched.stats.details:   # the solver's schedule did not ship: HEFT's did
            summary["solver"]["own"]["superseded"] = sched.stats.details["heft_after_planning"]
    # The shipped schedule as its scheduler made it, before memory planning re-timed it (issue 15's measure)
    scheduled = sched.stats.details.get("scheduled_ns", (own or {}).get("objective_ns", sched.stats.objective_ns))
    summary["solver"]["scheduled_us"] = scheduled / 1000
    if sim is not None:
        summary["simulated_makespan_us"] = round(sim.makespan_ns / 1000, 3)
    if validation is not None:
        summary["validation"] = validation.summary()
    return summary


PREDICATE_DRAWS = 8   # seeded inputs a predicated model's expected makespan averages over


def _predicated_makespans(bundle: Any, graph: Graph, sim: SimResult, options: BuildOptions) -> dict[str, Any]:
    """The worst case (every gate on: the schedule's, simulated) and the expected makespan of a predicated
    build (hetc.ir.predicates): the mean over ``PREDICATE_DRAWS`` seeded inputs, the build's own first, or
    over the given inputs alone; and the mean over the router's choices taken uniformly (the runs the
    scheduler weighs: every one when few, timed without data)."""
    spans = [sim.makespan_ns]
    if not options.inputs:
        spans += [simulate(bundle, make_inputs(graph, seed=options.input_seed + k), functional=True,
                           precision=options.precision).makespan_ns for k in range(1, PREDICATE_DRAWS)]
    gates = {n.when.name: n.when for n in graph.nodes if n.when is not None}
    names = frozenset(gates)
    routed = [simulate(bundle, functional=False, gates_off=names - on).makespan_ns
              for on in routing_choices(sorted(names), gate_routing(gates.values()))]
    return {"expected_us": round(sum(spans) / len(spans) / 1000, 3), "draws": len(spans),
            "min_us": round(min(spans) / 1000, 3), "max_us": round(max(spans) / 1000, 3),
            "uniform_us": round(sum(routed) / len(routed) / 1000, 3), "routings": len(routed),
            "uniform_min_us": round(min(routed) / 1000, 3), "uniform_max_us": round(max(routed) / 1000, 3),
            "worst_case_us": round(sim.stats["worst_case_makespan_ns"] / 1000, 3)}


def _heft_us(sched: Schedule) -> float | None:
    heft = sched.stats.details.get("heft_makespan_ns")
    return None if heft is None else heft / 1000

