"""Scheduling tiled graphs: alias nodes (Region, Assemble) are no tasks, and their outputs are read, moved and
waited for as hetc.schedule.tasks states (the tiling contract, issue 14), by every strategy."""
from __future__ import annotations

import itertools
import json
import random

import pytest

from hetc.ir.tiles import is_alias
from hetc.schedule import (Schedule, ScheduleInvariantError, build_problem, idle_accelerators_warning, lower_bound,
                           placement_rows, schedule, solve)
from hetc.schedule.artifact import Task
from hetc.schedule.bound import critical_path, work_bound
from hetc.schedule.problem import DmaSpec, SchedulingProblem, ValueSpec, assembly_memories
from hetc.schedule.tasks import asap, derive_tasks, makespan_of
from hetc.target import load_target
from tiled_graphs import (random_tiled_graph, regions_of_computed, tiled_chain, tiled_channels, tiled_conv,
                          tiled_vgg)

EDGE = load_target("edge-soc")
MULTI = load_target("multi-npu")
GRAPHS = {"conv": tiled_conv, "chain": tiled_chain, "regions_of_computed": regions_of_computed,
          "channels": tiled_channels}


def _transfers(sched: Schedule, value: str) -> dict[str, Task]:
    return {t.dst: t for t in sched.tasks if t.kind == "transfer" and t.value == value}


def _compute(sched: Schedule, graph, name: str) -> Task:
    node = next(n for n in graph.nodes if n.name == name)
    return next(t for t in sched.tasks if t.kind == "compute" and t.node == node.id)


# ---------------------------------------------------------------------------------------------- every strategy
@pytest.mark.parametrize("target", [EDGE, MULTI], ids=lambda t: t.name)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_every_strategy_schedules_tiled_graphs(name: str, target) -> None:
    graph = GRAPHS[name]()
    aliases = {n.id for n in graph.nodes if is_alias(n)}
    accelerator = next(d for d in target.devices if d != "cpu")
    strategies = ["cpsat", "heft", "greedy", "single:cpu"]
    if all(target.supports(n, accelerator) for n in graph.nodes if not is_alias(n)):
        strategies.append(f"single:{accelerator}")
    runs = {s: schedule(graph, target, s, time_limit_s=1.0) for s in strategies}
    _check_runs(graph, target, runs)
    for strategy, sched in runs.items():
        assert not any(t.kind == "compute" and t.node in aliases for t in sched.tasks), strategy
        assert set(sched.placement) == {n.id for n in graph.nodes} - aliases, strategy
        assert set(sched.aliases) == aliases, strategy
        joined = assembly_memories(graph.topo_order(), target, {v.name for v in graph.outputs})
        for node in graph.nodes:
            if node.op_type == "Assemble":   # in multi-npu's L2 unless it is a graph output
                assert sched.aliases[node.id] == joined[node.id]
                outside = node.outputs[0] in graph.outputs or not target.staging
                assert joined[node.id] == (target.dram if outside else target.staging)
            elif is_alias(node) and node.inputs[0].name == "x":
                assert sched.aliases[node.id] == target.dram  # a Region of the graph input
        again = Schedule.from_json(json.loads(sched.dumps()))
        assert again.aliases == sched.aliases and again.tasks == sched.tasks


def _check_runs(graph, target, runs: dict[str, Schedule]) -> None:
    """Every schedule verifies; every bound (CP-SAT's proven one included) is below every real makespan."""
    best = min(sched.makespan_ns for sched in runs.values())
    for strategy, sched in runs.items():
        sched.verify(graph, target)
        assert sched.lower_bound_ns <= best, strategy
    assert runs["cpsat"].makespan_ns <= runs["heft"].makespan_ns


@pytest.mark.parametrize("seed", range(8))
def test_random_tiled_graphs(seed: int) -> None:
    graph = random_tiled_graph(seed)
    for target in (EDGE, MULTI):
        runs = {s: schedule(graph, target, s, time_limit_s=0.5) for s in ("cpsat", "heft", "greedy", "single:cpu")}
        _check_runs(graph, target, runs)
        assert all(set(s.aliases) == {n.id for n in graph.nodes if is_alias(n)} for s in runs.values())


def test_schedule_json_lists_aliases() -> None:
    graph = tiled_conv()
    sched = schedule(graph, EDGE, "heft")
    doc = sched.to_json()
    assert doc["aliases"] == [{"node": k, "memory": m} for k, m in sorted(sched.aliases.items())]
    assert len(doc["aliases"]) == 4 and {a["memory"] for a in doc["aliases"]} == {"dram"}
    del doc["aliases"]  # a schedule.json written before tiling reads as a schedule without alias nodes
    assert Schedule.from_json(json.loads(json.dumps(doc))).aliases == {}


# ---------------------------------------------------------------------------------------------- the rules
def test_reader_of_an_assemble_waits_for_every_part() -> None:
    """On the NPU, the Relu reading conv1's Assemble gets a transfer from DRAM that waits for every part's
    transfer to DRAM; so does each Region of it that conv2's tiles read; the parts themselves go nowhere else."""
    graph = tiled_chain(tiles=3)
    sched = schedule(graph, EDGE, "single:npu")
    sched.verify(graph, EDGE)
    parts = [f"conv1_t{i}_y" for i in range(3)]
    written = {p: _transfers(sched, p) for p in parts}
    assert all(set(w) == {"dram"} and w["dram"].src == "npu_sram" for w in written.values())
    part_ids = {w["dram"].id for w in written.values()}
    relu_in = _transfers(sched, "conv1_y")
    assert set(relu_in) == {"npu_sram"} and relu_in["npu_sram"].src == "dram"
    assert part_ids <= set(relu_in["npu_sram"].deps)
    assert relu_in["npu_sram"].id in _compute(sched, graph, "relu").deps
    for i in range(3):
        region = _transfers(sched, f"conv2_in{i}")
        assert set(region) == {"npu_sram"} and part_ids <= set(region["npu_sram"].deps)
        assert region["npu_sram"].id in _compute(sched, graph, f"conv2_t{i}").deps
        assert region["npu_sram"].start_ns >= max(w["dram"].end_ns for w in written.values())
    # the regions of the graph input travel, not the input; an Assemble's output is in DRAM already
    assert not _transfers(sched, "x") and not _transfers(sched, "conv2_y")
    assert all(_transfers(sched, f"conv1_in{i}") for i in range(3))


def test_region_of_a_computed_value_is_read_in_place() -> None:
    """Regions of the NPU-computed head output: NPU tiles read them in place (no transfer, a dependency on the
    head Conv); the CPU-only Mish gets its Region by a transfer out of the NPU's scratchpad."""
    graph = regions_of_computed()
    sched = schedule(graph, EDGE, "greedy")
    sched.verify(graph, EDGE)
    head = _compute(sched, graph, "head")
    assert head.engine == "npu"
    for i in range(2):
        tile = _compute(sched, graph, f"body_t{i}")
        assert tile.engine == "npu" and head.id in tile.deps and not _transfers(sched, f"body_in{i}")
    corner = _transfers(sched, "corner")
    assert set(corner) == {"dram"} and corner["dram"].src == "npu_sram" and head.id in corner["dram"].deps
    corner_node = next(n for n in graph.nodes if n.name == "corner")
    assert sched.aliases[corner_node.id] == "npu_sram"
    # the transfer moves the region's bytes (a strided DMA), not its base's
    assert corner["dram"].bytes == corner_node.outputs[0].nbytes == graph.values["head_y"].nbytes // 2
    assert corner["dram"].id in _compute(sched, graph, "mish").deps


def test_tiles_spread_across_cores() -> None:
    """multi-npu: a compute-heavy Conv cut into four channel slices runs on several cores at once."""
    graph = tiled_channels()
    heft, cpsat = schedule(graph, MULTI, "heft"), schedule(graph, MULTI, "cpsat", time_limit_s=2.0)
    one_core = schedule(graph, MULTI, "single:npu0")
    for sched in (heft, cpsat):
        tiles = {sched.placement[n.id] for n in graph.nodes if n.tile is not None}
        assert len(tiles) >= 3 and all(d.startswith("npu") for d in tiles)
        assert sched.makespan_ns < 0.5 * one_core.makespan_ns
    assert cpsat.makespan_ns <= heft.makespan_ns


# ---------------------------------------------------------------------------------------------- exactness
def _tiles_problem(seed: int, staged: bool = False) -> SchedulingProblem:
    """in -> Region r0, r1 -> tiles -> parts -> Assemble O -> a consumer -> y (graph output)."""
    rng = random.Random(seed)
    size = lambda lo, hi: 64 * rng.randint(lo, hi)  # noqa: E731
    p0, p1 = size(1, 4), size(1, 4)
    values = (ValueSpec("in", size(2, 8), None, (0, 1)), ValueSpec("r0", size(1, 4), 0, (2,)),
              ValueSpec("r1", size(1, 4), 1, (3,)), ValueSpec("p0", p0, 2, (4,)), ValueSpec("p1", p1, 3, (4,)),
              ValueSpec("O", p0 + p1, 4, (5,)), ValueSpec("y", size(1, 4), 5, (), is_output=True))
    durations = ({}, {}) + tuple(_durations(rng) for _ in range(2)) + ({}, _durations(rng))
    return _problem(("R0", "R1", "T0", "T1", "A", "C"), durations, ((0,), (0,), (1,), (2,), (3, 4), (5,)), values,
                    {0: "Region", 1: "Region", 4: "Assemble"}, staged)


def _regions_problem(seed: int, staged: bool = False) -> SchedulingProblem:
    """in -> H -> h; Regions of h -> two tiles -> Assemble O; a Region of O -> a consumer -> y."""
    rng = random.Random(100 + seed)
    size = lambda lo, hi: 64 * rng.randint(lo, hi)  # noqa: E731
    values = (ValueSpec("in", size(2, 6), None, (0,)), ValueSpec("h", size(2, 6), 0, (1, 2)),
              ValueSpec("r", size(1, 3), 1, (3,)), ValueSpec("r2", size(1, 3), 2, (4,)),
              ValueSpec("p", size(1, 3), 3, (5,)), ValueSpec("p2", size(1, 3), 4, (5,)),
              ValueSpec("O", size(2, 6), 5, (6,)), ValueSpec("q", size(1, 3), 6, (7,)),
              ValueSpec("y", size(1, 3), 7, (), is_output=True))
    durations = (_durations(rng), {}, {}, _durations(rng), _durations(rng), {}, {}, _durations(rng))
    return _problem(("H", "R", "R2", "T", "U", "A", "RQ", "C"), durations,
                    ((0,), (1,), (1,), (2,), (3,), (4, 5), (6,), (7,)), values,
                    {1: "Region", 2: "Region", 5: "Assemble", 6: "Region"}, staged)


def _durations(rng: random.Random) -> dict[str, int]:
    return {"cpu": rng.randint(40, 200), **({"npu": rng.randint(5, 60)} if rng.random() < 0.85 else {})}


def _problem(names, durations, node_inputs, values, alias_ops, staged: bool = False) -> SchedulingProblem:
    """One DMA engine serves both directions, so a part's write to DRAM and the read of the Assemble's output
    may share an engine and no semaphore: the model must know it to be exact. ``staged``: an on-chip L2 with
    engines to both, where the Assembles live (multi-npu's join), the CPU's parts reaching it from DRAM."""
    dmas = {"dma": DmaSpec("dma", ("dram", "sram"), 10.0, 16.0)}
    if staged:
        dmas |= {"dma_l2": DmaSpec("dma_l2", ("sram", "l2"), 3.0, 64.0),
                 "dma_l2_dram": DmaSpec("dma_l2_dram", ("l2", "dram"), 10.0, 12.0)}
    return SchedulingProblem(
        node_ids=tuple(range(len(names))), node_names=names, ops=tuple("Relu" for _ in names),
        durations=durations, node_inputs=node_inputs, values=values, device_memory={"cpu": "dram", "npu": "sram"},
        dmas=dmas, sync_ns=7, priority=("npu", "cpu"), alias_ops=alias_ops, staging="l2" if staged else None,
        assembly={n: "l2" for n, op in alias_ops.items() if op == "Assemble"} if staged else {})


def _brute_force(problem: SchedulingProblem) -> int:
    """Optimal makespan: every placement of the compute nodes, every order of every engine, ASAP-timed."""
    best = None
    for placement in itertools.product(*(problem.candidates(i) or [None] for i in range(problem.n))):
        tasks = derive_tasks(problem, placement, {})
        lanes: dict[str, list] = {}
        for key, spec in tasks.items():
            lanes.setdefault(spec.engine, []).append(key)
        for perms in itertools.product(*(itertools.permutations(keys) for keys in lanes.values())):
            try:
                span = makespan_of(asap(problem, tasks, dict(zip(lanes, map(list, perms)))))
            except ValueError:
                continue  # this order contradicts a data dependency
            best = span if best is None else min(best, span)
    return best


@pytest.mark.parametrize("build,seed", [(b, s) for b in (_tiles_problem, _regions_problem) for s in range(4)])
@pytest.mark.parametrize("staged", [False, True], ids=["assembled in dram", "assembled in l2"])
def test_cpsat_is_exact_with_alias_nodes(build, seed: int, staged: bool) -> None:
    problem = build(seed, staged)
    sched = solve(problem, "cpsat", time_limit_s=5.0)
    optimum = _brute_force(problem)
    assert sched.makespan_ns == optimum
    assert sched.stats.status == "OPTIMAL" and sched.lower_bound_ns == optimum
    assert sched.makespan_ns <= solve(problem, "heft").makespan_ns


# ---------------------------------------------------------------------------------------------- lower bound
def test_lower_bound_counts_no_alias_work_and_the_part_write_back() -> None:
    """Two NPU-only tiles in a chain, each between a Region and an Assemble (the second Assemble is the graph
    output): the bound is, per stage, the region's load + the tile + the part's write-back to DRAM (with a
    semaphore each), since a Region of an Assemble's output can only be loaded once every part is in DRAM;
    and it is the optimum."""
    values = (ValueSpec("in", 4096, None, (0,)), ValueSpec("r", 1024, 0, (1,)), ValueSpec("p", 2048, 1, (2,)),
              ValueSpec("O", 2048, 2, (3,)), ValueSpec("q", 512, 3, (4,)), ValueSpec("p2", 1024, 4, (5,)),
              ValueSpec("O2", 1024, 5, (), is_output=True))
    problem = _problem(("R", "T", "A", "RQ", "U", "A2"), ({}, {"npu": 300}, {}, {}, {"npu": 200}, {}),
                       ((0,), (1,), (2,), (3,), (4,), (5,)), values,
                       {0: "Region", 2: "Assemble", 3: "Region", 5: "Assemble"})
    move = lambda nbytes: 10 + nbytes // 16 + 7  # noqa: E731  (latency + bytes / bandwidth + a semaphore)
    assert critical_path(problem) == work_bound(problem) == 500
    assert lower_bound(problem) == move(1024) + 300 + move(2048) + move(512) + 200 + move(1024)
    sched = solve(problem, "cpsat", time_limit_s=2.0)
    assert sched.makespan_ns == lower_bound(problem) and sched.stats.status == "OPTIMAL"


def test_work_bound_is_the_tiles_work() -> None:
    graph = tiled_conv(tiles=4)
    problem = build_problem(graph, MULTI)
    tiles = [i for i in range(problem.n) if not problem.is_alias(i)]
    assert len(tiles) == 4 and len(problem.alias_ops) == 5
    assert all(problem.durations[i] == {} and problem.candidates(i) == [] for i in problem.alias_ops)
    assert work_bound(problem) == -(-sum(problem.fastest(i) for i in tiles) // len(MULTI.devices))


# ---------------------------------------------------------------------------------------------- verify
def test_verify_catches_broken_alias_rules() -> None:
    graph = tiled_chain(tiles=2)
    sched = schedule(graph, EDGE, "single:npu")
    by_name = {n.name: n for n in graph.nodes}

    def broken(tasks, **changes) -> Schedule:
        from dataclasses import replace
        return replace(sched, tasks=tuple(tasks), **changes)

    part = _transfers(sched, "conv1_t0_y")["dram"]
    kept = [Task(**{**t.__dict__, "deps": tuple(d for d in t.deps if d != part.id)})
            for t in sched.tasks if t.id != part.id]
    with pytest.raises(ScheduleInvariantError, match="never written to 'dram'"):
        broken(kept).verify(graph, EDGE)

    region = _transfers(sched, "conv2_in1")["npu_sram"]
    early = [Task(**{**t.__dict__, "deps": ()}) if t.id == region.id else t for t in sched.tasks]
    with pytest.raises(ScheduleInvariantError, match="'conv2_in1' from 'dram', where no dependency put it"):
        broken(early).verify(graph, EDGE)

    assemble = by_name["conv1_y_assemble"]
    fake = Task(len(sched.tasks), "compute", "cpu", 0, 1, node=assemble.id, op="Assemble")
    with pytest.raises(ScheduleInvariantError, match="alias node is not a task"):
        broken(list(sched.tasks) + [fake]).verify(graph, EDGE)
    with pytest.raises(ScheduleInvariantError, match="records 'npu_sram'"):
        broken(sched.tasks, aliases={**sched.aliases, assemble.id: "npu_sram"}).verify(graph, EDGE)
    with pytest.raises(ScheduleInvariantError, match="alias nodes run on no device"):
        broken(sched.tasks, placement={**sched.placement, assemble.id: "npu"}).verify(graph, EDGE)


def test_verify_catches_an_in_place_reader_that_does_not_wait() -> None:
    graph = regions_of_computed()
    sched = schedule(graph, EDGE, "greedy")
    tile = _compute(sched, graph, "body_t0")
    head = _compute(sched, graph, "head")
    loose = tuple(Task(**{**t.__dict__, "deps": tuple(d for d in t.deps if d != head.id)}) if t.id == tile.id else t
                  for t in sched.tasks)
    with pytest.raises(ScheduleInvariantError, match="reads 'body_in0' but no dependency makes it resident"):
        sched.with_tasks(loose).verify(graph, EDGE)


# ---------------------------------------------------------------------------------------------- reports
def test_placement_rows_and_idle_warning_skip_alias_nodes() -> None:
    graph = tiled_conv(tiles=3)
    sched = schedule(graph, EDGE, "single:cpu")
    rows = placement_rows(graph, EDGE, sched)
    assert [r["name"] for r in rows] == [f"conv_t{i}" for i in range(3)]
    from dataclasses import replace
    as_heft = replace(sched, stats=replace(sched.stats, strategy="heft"))
    assert "3 of 3 nodes run on the CPU" in idle_accelerators_warning(graph, EDGE, as_heft)


# ---------------------------------------------------------------------------------------------- scale
def test_windows_cut_on_compute_nodes(monkeypatch) -> None:
    """Several CP-SAT windows: Assembles whose parts were committed in an earlier window, Regions read in the
    next one; windows count the tile nodes, not the alias nodes."""
    import hetc.schedule.windows as windows
    monkeypatch.setattr(windows, "WINDOW_NODES", 8)
    graph = tiled_vgg(layers=4, tiles=6, shape=(1, 32, 48, 48))
    problem = build_problem(graph, MULTI)
    assert len(problem.compute_nodes) == 24
    for target in (EDGE, MULTI):
        sched = schedule(graph, target, "cpsat", time_limit_s=2.0)
        sched.verify(graph, target)
        assert sched.stats.details["windows"] == 3
        assert sched.makespan_ns <= schedule(graph, target, "heft").makespan_ns
        assert sched.lower_bound_ns <= sched.makespan_ns


@pytest.mark.slow
@pytest.mark.parametrize("target", [EDGE, MULTI], ids=lambda t: t.name)
def test_vgg_scale_tiled_graph_schedules(target) -> None:
    """16 Convs of 24 row tiles each (384 tile nodes, 800 nodes): ~850-1,300 tasks, both strategies valid and
    CP-SAT no worse than HEFT. (How long a tiled VGG-19 takes per stage: `tools/compile_stages.py`.)"""
    graph = tiled_vgg(layers=16, tiles=24)
    heft = schedule(graph, target, "heft")
    cpsat = schedule(graph, target, "cpsat")
    for sched in (heft, cpsat):
        sched.verify(graph, target)
        assert sched.lower_bound_ns <= sched.makespan_ns and len(sched.tasks) > 800
    assert cpsat.makespan_ns <= heft.makespan_ns


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("target", [EDGE, MULTI], ids=lambda t: t.name)
@pytest.mark.parametrize("strategy", ["cpsat", "heft", "greedy"])
def test_scheduled_tiled_layers_compute_what_onnxruntime_computes(target, strategy: str) -> None:
    """Three tiled layers (rows with halo, a region of a region, channels; random He weights) scheduled by the
    scheduler itself, planned, emitted and simulated: the numbers equal onnxruntime on the untiled model."""
    import numpy as np

    from hetc.codegen import emit
    from hetc.memory import plan_memory
    from hetc.sim.simulate import simulate
    from test_sim_regions import inputs, three_layers
    from tiling_helpers import onnxruntime_outputs

    graph, model = three_layers()
    sched = schedule(graph, target, strategy, time_limit_s=1.0)
    sched.verify(graph, target)
    assert any(d != "cpu" for d in sched.placement.values())  # tiles reach the accelerators
    plan = plan_memory(graph, sched, target)
    plan.verify(target)
    result = simulate(emit(graph, plan, target), inputs())
    (expected,) = onnxruntime_outputs(model, inputs())
    np.testing.assert_allclose(result.outputs["y"], expected, rtol=1e-4, atol=1e-4)
