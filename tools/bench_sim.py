"""Benchmark the simulator's event loop against SimPy on the same 10,000-task schedule.

    python tools/bench_sim.py [--tasks 10000] [--repeat 9]
    python tools/bench_sim.py --light [--strategy heft] [--ort-threads 1]   # functional simulation vs onnxruntime

Builds a synthetic layered graph (Relu/Add on small tensors, placed round-robin on the CPU, NPU and DSP of
the edge-soc preset so that about half the tasks are DMA transfers), schedules it with the hand planner, emits
a bundle and simulates it timing-only. The SimPy model runs the very same programs (one process per engine,
semaphores as events triggered ``sync_ns`` after a signal) without DRAM contention and records the same trace,
so the fair comparison is hetc's timing engine (decode + run) with ``contention=False``; the DRAM-sharing figure
and the end-to-end ``simulate()`` (race check and SimResult included) are printed too. All four run in
``--repeat`` interleaved rounds (CPU time, medians).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnx

from hetc.codegen import Bundle, Compute, Dma, Signal, Wait, emit
from hetc.ir import Graph, Node, Value
from hetc.sim import simulate
from hetc.sim.engine import run
from hetc.sim.handplan import cost_duration, plan_by_hand
from hetc.sim.kernels._blas import openblas_core
from hetc.sim.machine import Machine
from hetc.target import Target, load_target


def synthetic_graph(nodes: int, seed: int = 0) -> Graph:
    """Node i reads the output of node i-1 and, every other node, one of the 8 before it (Add)."""
    rng = np.random.default_rng(seed)
    x = Value("x", "float32", (1, 256))
    values = [x]
    graph_nodes: list[Node] = []
    for i in range(nodes):
        out = Value(f"v{i}", "float32", (1, 256))
        if i % 2 and len(values) > 2:
            other = values[-1 - int(rng.integers(1, min(8, len(values) - 1) + 1))]
            graph_nodes.append(Node(i, "Add", f"add{i}", [values[-1], other], [out]))
        else:
            graph_nodes.append(Node(i, "Relu", f"relu{i}", [values[-1]], [out]))
        values.append(out)
    return Graph.build("synthetic", graph_nodes, [x], [values[-1]], {"": 17})


def synthetic_bundle(tasks: int) -> tuple[Bundle, Target]:
    target = load_target("edge-soc")
    devices = ["npu", "npu", "dsp", "cpu"]
    nodes = tasks // 2
    while True:
        graph = synthetic_graph(nodes)
        placement = {n.id: devices[(n.id // 3) % len(devices)] for n in graph.nodes}
        plan = plan_by_hand(graph, target, placement, cost_duration(target), reuse=False, alias=False)
        if len(plan.schedule.tasks) >= tasks:
            return emit(graph, plan, target), target
        nodes += max(1, (tasks - len(plan.schedule.tasks)) // 2)


def simpy_run(bundle: Bundle, sync_ns: float) -> tuple[float, list[tuple[str, int, float, float]]]:
    """The same programs as SimPy processes; returns (makespan, trace of (engine, pc, start, end))."""
    import simpy   # a dev dependency: imported here so that collecting this file never needs it

    env = simpy.Environment()
    trace: list[tuple[str, int, float, float]] = []
    counts: dict[str, int] = {}
    reached: dict[tuple[str, int], simpy.Event] = {}

    def event_for(sem: str, count: int) -> simpy.Event:
        key = (sem, count)
        if key not in reached:
            reached[key] = env.event()
        return reached[key]

    def publish(sem: str):
        yield env.timeout(sync_ns)
        counts[sem] = counts.get(sem, 0) + 1
        ev = event_for(sem, counts[sem])
        ev.succeed()

    def engine(name, instructions):
        for pc, ins in enumerate(instructions):
            start = env.now
            if isinstance(ins, (Compute, Dma)):
                yield env.timeout(ins.duration_ns)
            elif isinstance(ins, Signal):
                env.process(publish(ins.sem))
            elif isinstance(ins, Wait):
                if counts.get(ins.sem, 0) < ins.count:
                    yield event_for(ins.sem, ins.count)
            trace.append((name, pc, start, env.now))

    for name, program in bundle.programs.items():
        env.process(engine(name, program.instructions))
    env.run()
    return max(end for *_, end in trace), trace


def bench_light(strategy: str, repeat: int, ort_threads: int) -> None:
    """Functional simulation of each light model (scheduled, planned, emitted for edge-soc) against a warm
    onnxruntime session on the same inputs: wall time of one inference each, median of ``repeat`` interleaved
    runs after one warm-up run on each side.

    The simulator computes every NPU/DSP kernel on one BLAS thread (``HETC_BLAS_THREADS``, default 1), so the
    reference session gets as many intra-op threads (``--ort-threads``); the ratio against onnxruntime's
    default thread count (all cores) is printed too. The simulator's own CPU-path sessions keep their
    thread count (``HETC_ORT_THREADS``)."""
    import onnxruntime as ort

    from hetc.frontend import load_onnx
    from hetc.memory import plan_memory
    from hetc.passes import optimize
    from hetc.schedule import schedule
    from hetc.sim import random_inputs

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    target = load_target("edge-soc")
    blas = os.environ.get("HETC_BLAS_THREADS", "1")
    print(f"median of {repeat} runs after a warm-up; simulator BLAS: OpenBLAS {openblas_core()} kernels, "
          f"{blas} thread(s); onnxruntime: {ort_threads} thread(s) (ratio), default threads (ratio*)")
    print(f"{'model':<14} {'tasks':>6} {'sim s':>8} {'ort s':>8} {'ratio':>6} {'ort* s':>8} {'ratio*':>6} "
          f"{'max err':>9}  (goal ratio <= 2)")
    for path in sorted(light.glob("light_*.onnx")):
        graph = optimize(load_onnx(path))
        plan = plan_memory(graph, schedule(graph, target, strategy), target)
        bundle = emit(graph, plan, target)
        inputs = random_inputs(bundle)
        options = ort.SessionOptions()
        options.intra_op_num_threads = ort_threads
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        default_options = ort.SessionOptions()
        default_options.log_severity_level = 3
        default = ort.InferenceSession(str(path), default_options, providers=["CPUExecutionProvider"])
        for warm in (lambda: session.run(None, inputs), lambda: default.run(None, inputs),
                     lambda: simulate(bundle, inputs)):   # ORT's first run, the CPU path's session cache
            warm()
        # Interleaved, so that the load other processes put on the host weighs on both sides alike.
        samples = [(_wall(lambda: simulate(bundle, inputs)), _wall(lambda: session.run(None, inputs)),
                    _wall(lambda: default.run(None, inputs))) for _ in range(repeat)]
        ours, theirs, theirs_default = (statistics.median(column) for column in zip(*samples))
        result, expected = simulate(bundle, inputs), session.run(None, inputs)
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(result.outputs.values(), expected))
        name = path.stem.removeprefix("light_")
        print(f"{name:<14} {len(plan.schedule.tasks):>6} {ours:8.3f} {theirs:8.3f} {ours / theirs:6.1f} "
              f"{theirs_default:8.3f} {ours / theirs_default:6.1f} {err:9.2e}", flush=True)


def _wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--light", action="store_true", help="functional simulation of onnx's light models vs "
                                                             "onnxruntime instead of the event-loop benchmark")
    parser.add_argument("--strategy", default="heft", help="scheduler for --light (default heft)")
    parser.add_argument("--ort-threads", type=int, default=int(os.environ.get("HETC_BLAS_THREADS", "1")),
                        help="intra-op threads of the reference session for --light (default: the "
                             "simulator's BLAS threads)")
    args = parser.parse_args()
    if args.light:
        bench_light(args.strategy, args.repeat, args.ort_threads)
        return
    t0 = time.perf_counter()
    bundle, target = synthetic_bundle(args.tasks)
    n_tasks = len(bundle.schedule_json["tasks"])
    n_ins = sum(len(p.instructions) for p in bundle.programs.values())
    print(f"schedule: {n_tasks} tasks, {n_ins} instructions, built and emitted in {time.perf_counter() - t0:.2f} s")

    def engine_only(contention: bool):
        trace = run(Machine.from_bundle(bundle), contention=contention)
        return max(end for *_, end in trace.records), trace

    sides = {"simpy": lambda: simpy_run(bundle, target.sync_ns), "plain": lambda: engine_only(False),
             "shared": lambda: engine_only(True), "full": lambda: simulate(bundle, functional=False)}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    out: dict[str, object] = {}
    names = list(sides)
    for round_ in range(args.repeat):
        # Interleaved, each round in a rotated order, so that the load other processes put on the host weighs
        # on every side alike. Every run has the garbage collector paused (simulate() does the same): with this
        # many live objects a generational pass costs more than the simulation itself and lands at random.
        # Times are CPU seconds of this process (time.process_time): on a shared machine wall time mostly
        # measures the other processes.
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            out.pop(name, None)   # free the previous result outside the timed region
            gc.collect()
            gc.disable()
            start = time.process_time()
            out[name] = sides[name]()
            cpu[name].append(time.process_time() - start)
            gc.enable()
    med = {name: statistics.median(times) for name, times in cpu.items()}
    ratios = {name: sorted(s / o for s, o in zip(cpu["simpy"], cpu[name])) for name in ("plain", "shared")}
    simpy_makespan, simpy_trace = out["simpy"]
    ours_makespan, ours_trace = out["plain"]
    cont_makespan, cont_trace = out["shared"]
    full = out["full"]
    engines = list(bundle.programs)
    same = sorted((engines[e], pc, s, t) for e, pc, s, t in ours_trace.records) == sorted(simpy_trace)
    events = full.stats["events"]   # starts + ends of computes/DMAs, signals, wait releases: same for both
    print(f"planned makespan          {bundle.manifest['planned_makespan_ns'] / 1000:10.1f} us")
    print(f"simulated, no sharing     {ours_makespan / 1000:10.1f} us   (SimPy: {simpy_makespan / 1000:.1f} us, "
          f"identical trace: {same})")
    print(f"simulated, DRAM shared    {cont_makespan / 1000:10.1f} us")
    print(f"simulated events          {events}  (heap events: {cont_trace.heap_events} with DRAM sharing, "
          f"{ours_trace.heap_events} without)")
    print(f"CPU time, median of {args.repeat} interleaved rounds (min-max); ratio = SimPy median / hetc median "
          "(range of the per-round ratios):")
    labels = {"simpy": "SimPy", "plain": "hetc engine, no sharing", "shared": "hetc engine, DRAM shared"}
    for name, label in labels.items():
        line = (f"{label:<25} {med[name] * 1000:7.1f} ms ({min(cpu[name]) * 1000:.1f}-{max(cpu[name]) * 1000:.1f})"
                f"  {events / med[name]:12,.0f} events/s")
        if name != "simpy":
            line += f"  {med['simpy'] / med[name]:5.2f}x SimPy ({ratios[name][0]:.2f}-{ratios[name][-1]:.2f})"
        print(line)
    print(f"simulate() end to end     {med['full'] * 1000:7.1f} ms ({min(cpu['full']) * 1000:.1f}-"
          f"{max(cpu['full']) * 1000:.1f})  (decode, engine, race check, SimResult with {len(full.events)} events "
          "and memory curves)")


if __name__ == "__main__":
    main()
