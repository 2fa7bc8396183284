"""Benchmark the simulator's event loop against SimPy on the same 10,000-task schedule.

    python tools/bench_sim.py [--tasks 10000] [--repeat 3]

Builds a synthetic layered graph (Relu/Add on small tensors, placed round-robin on the CPU, NPU and DSP of
the edge-soc preset so that about half the tasks are DMA transfers), schedules it with the hand planner, emits
a bundle and simulates it timing-only. The SimPy model runs the very same programs (one process per engine,
semaphores as events triggered ``sync_ns`` after a signal) without DRAM contention, so the fair comparison is
against ``simulate(..., contention=False)``; the contended figure is printed too. Prints wall times,
events/second and the speed-up.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import simpy

from hetc.codegen import Bundle, Compute, Dma, Signal, Wait, emit
from hetc.ir import Graph, Node, Value
from hetc.sim import simulate
from hetc.sim.handplan import cost_duration, plan_by_hand
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


def simpy_run(bundle: Bundle, sync_ns: float) -> tuple[float, int]:
    """The same programs as SimPy processes; returns (makespan, events processed)."""
    env = simpy.Environment()
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

    def engine(instructions):
        for ins in instructions:
            if isinstance(ins, (Compute, Dma)):
                yield env.timeout(ins.duration_ns)
            elif isinstance(ins, Signal):
                env.process(publish(ins.sem))
            elif isinstance(ins, Wait):
                if counts.get(ins.sem, 0) < ins.count:
                    yield event_for(ins.sem, ins.count)

    for program in bundle.programs.values():
        env.process(engine(program.instructions))
    events = 0
    while env.peek() != float("inf"):
        env.step()
        events += 1
    return env.now, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    t0 = time.perf_counter()
    bundle, target = synthetic_bundle(args.tasks)
    n_tasks = len(bundle.schedule_json["tasks"])
    n_ins = sum(len(p.instructions) for p in bundle.programs.values())
    print(f"schedule: {n_tasks} tasks, {n_ins} instructions, built and emitted in {time.perf_counter() - t0:.2f} s")

    def best(fn):
        walls, out = [], None
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = fn()
            walls.append(time.perf_counter() - start)
        return min(walls), statistics.median(walls), out

    ours_wall, ours_med, ours = best(lambda: simulate(bundle, functional=False, contention=False))
    cont_wall, _, contended = best(lambda: simulate(bundle, functional=False))
    simpy_wall, simpy_med, (simpy_makespan, simpy_events) = best(lambda: simpy_run(bundle, target.sync_ns))
    assert abs(simpy_makespan - ours.makespan_ns) < 1e-6 * max(1.0, ours.makespan_ns), \
        f"SimPy makespan {simpy_makespan} != hetc {ours.makespan_ns}"
    print(f"planned makespan        {bundle.manifest['planned_makespan_ns'] / 1000:.1f} us")
    print(f"simulated (no sharing)  {ours.makespan_ns / 1000:.1f} us   SimPy agrees: {simpy_makespan / 1000:.1f} us")
    print(f"simulated (DRAM shared) {contended.makespan_ns / 1000:.1f} us")
    print(f"hetc.sim   wall {ours_wall * 1000:7.1f} ms (median {ours_med * 1000:.1f})  "
          f"{ours.stats['events'] / ours_wall:,.0f} events/s ({ours.stats['events']} events)")
    print(f"  + DRAM   wall {cont_wall * 1000:7.1f} ms  {contended.stats['events'] / cont_wall:,.0f} events/s")
    print(f"SimPy      wall {simpy_wall * 1000:7.1f} ms (median {simpy_med * 1000:.1f})  "
          f"{simpy_events / simpy_wall:,.0f} events/s ({simpy_events} events)")
    print(f"speed-up   {simpy_wall / ours_wall:.2f}x  (goal >= 3x)")


if __name__ == "__main__":
    main()
