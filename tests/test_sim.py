"""The simulator: timing against the plan, DRAM sharing, functional results against onnxruntime, and plans
broken on purpose (dropped wait, shifted offset, dropped DMA, unreachable semaphore)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest

from hetc.codegen import Bundle, Compute, Dma, Operand, Wait, emit
from hetc.errors import SimulationError
from hetc.frontend import load_onnx
from hetc.passes import optimize
from hetc.sim import random_inputs, simulate
from handplan import cost_duration, plan_by_hand
from hetc.sim.machine import accesses
from hetc.target import load_target

from test_sim_support import REPO, mixed_bundle, mixed_inputs, mixed_model, mixed_plan, reference, toy_target


def edit(bundle: Bundle, engine: str, pc: int, new=None) -> Bundle:
    """The bundle with instruction ``pc`` of ``engine`` replaced by ``new`` (or removed)."""
    ins = list(bundle.programs[engine].instructions)
    if new is None:
        del ins[pc]
    else:
        ins[pc] = new
    return replace(bundle, programs={**bundle.programs, engine: replace(bundle.programs[engine],
                                                                        instructions=tuple(ins))})


def find(bundle: Bundle, engine: str, pred) -> int:
    return next(pc for pc, i in enumerate(bundle.programs[engine].instructions) if pred(i))


def wrong(result, expected: np.ndarray) -> bool:
    return not np.allclose(result.outputs["y"], expected, atol=1e-4)


# ---------------------------------------------------------------------------------------------- timing
def test_timing_matches_the_plan_without_contention() -> None:
    bundle = mixed_bundle()
    result = simulate(bundle, functional=False)
    assert result.outputs is None
    assert result.makespan_ns == result.planned_makespan_ns == bundle.manifest["planned_makespan_ns"]
    work = [e for e in result.events if e.kind in ("compute", "dma")]
    assert len(work) == len(bundle.schedule().tasks)
    for e in work:
        assert e.end_ns - e.start_ns == pytest.approx(e.planned_end_ns - e.planned_start_ns)
        assert e.start_ns <= e.planned_start_ns   # as soon as possible never starts later than planned


def test_semaphores_become_visible_sync_ns_later() -> None:
    bundle = mixed_bundle()
    result = simulate(bundle, functional=False)
    signals = {(e.engine, e.index): e.end_ns for e in result.events if e.kind == "signal"}
    assert result.sync_edges
    for edge in result.sync_edges:
        assert edge.time_ns >= signals[(edge.src_engine, edge.src_index)] + 100   # toy target: sync_ns = 100
    waits = sum(1 for p in bundle.programs.values() for i in p.instructions if isinstance(i, Wait))
    assert len(result.sync_edges) == waits


def test_shared_dram_bandwidth_stretches_the_run() -> None:
    fast = simulate(mixed_bundle(toy_target(dram_bw=1000.0)), mixed_inputs())
    # planned where DRAM is fast, run where it is slow: the simulator shares the 4 B/ns the plan ignored
    graph, _, plan = mixed_plan(toy_target(dram_bw=1000.0))
    slow_bundle = emit(graph, plan, toy_target(dram_bw=4.0))
    slow = simulate(slow_bundle, mixed_inputs())
    assert fast.makespan_ns == fast.planned_makespan_ns
    assert slow.makespan_ns > slow.planned_makespan_ns
    assert slow.stats["dram_min_speed"] < 1.0
    # Two DMAs read DRAM at once at the start; each gets a share of the 4 B/ns.
    first = [e for e in slow.events if e.kind == "dma" and e.start_ns == 0]
    assert len(first) >= 2 and all(e.end_ns - e.start_ns > e.planned_end_ns - e.planned_start_ns for e in first)
    assert np.allclose(slow.outputs["y"], fast.outputs["y"])


@pytest.mark.parametrize("dram_bw", [4.0, 2.0])
def test_a_plan_that_shares_dram_runs_as_planned(dram_bw: float) -> None:
    """Planned for the slow DRAM (hetc.schedule.dram), the same graph runs in the simulator as planned (to the
    ns each end is rounded up to), and longer than the plan for a fast DRAM. The tasks DRAM slowed carry their
    own duration into their instructions: the simulator shares DRAM itself."""
    fast = mixed_bundle(toy_target(dram_bw=1000.0)).schedule().makespan_ns
    bundle = mixed_bundle(toy_target(dram_bw=dram_bw))
    slowed = [t for t in bundle.schedule().tasks if t.work_ns is not None]
    assert slowed and all(t.work_ns < t.duration_ns for t in slowed)
    durations = {i.task: i.duration_ns for p in bundle.programs.values() for i in p.instructions
                 if isinstance(i, (Compute, Dma))}
    assert all(durations[t.id] == t.work_ns for t in slowed)
    slow = simulate(bundle, mixed_inputs())
    assert slow.planned_makespan_ns > fast
    assert abs(slow.makespan_ns - slow.planned_makespan_ns) <= 4


def test_memory_usage_never_exceeds_the_plan() -> None:
    bundle = mixed_bundle()
    result = simulate(bundle, functional=False)
    plan = bundle.memory_plan()
    for memory, steps in result.memory_usage.items():
        assert max(b for _, b in steps) <= plan.stats[memory].lower_bound_bytes + 64
        assert steps[-1][1] >= 0


# ---------------------------------------------------------------------------------------------- functional
def test_functional_result_equals_onnxruntime() -> None:
    result = simulate(mixed_bundle(), mixed_inputs())
    (expected,) = reference(mixed_model(), mixed_inputs())
    np.testing.assert_allclose(result.outputs["y"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("devices", [("npu",), ("npu", "dsp", "cpu")])
def test_tiny_cnn_matches_onnxruntime(devices: tuple[str, ...]) -> None:
    path = REPO / "models" / "tiny_cnn.onnx"
    graph = optimize(load_onnx(path))
    target = load_target("edge-soc")
    placement = {}
    for k, node in enumerate(graph.nodes):
        ok = [d for d in devices if target.supports(node, d)] or ["cpu"]
        placement[node.id] = ok[k % len(ok)]
    bundle = emit(graph, plan_by_hand(graph, target, placement, cost_duration(target)), target)
    inputs = random_inputs(bundle, seed=1)
    result = simulate(bundle, inputs)
    (expected,) = reference(onnx.load(path), inputs)
    np.testing.assert_allclose(result.outputs["logits"], expected, rtol=1e-4, atol=1e-4)


def test_timing_only_and_functional_agree_on_time() -> None:
    bundle = mixed_bundle()
    assert simulate(bundle, functional=False).events == simulate(bundle, mixed_inputs()).events


def test_default_inputs_are_deterministic() -> None:
    bundle = mixed_bundle()
    a, b = simulate(bundle), simulate(bundle)
    assert a.stats["inputs"] == "random(seed=0)" and np.array_equal(a.outputs["y"], b.outputs["y"])


def test_repeated_runs_do_not_see_each_other() -> None:
    bundle = mixed_bundle()
    other = {"x": np.random.default_rng(4).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    simulate(bundle, other)
    again = simulate(bundle, mixed_inputs())
    (expected,) = reference(mixed_model(), mixed_inputs())
    np.testing.assert_allclose(again.outputs["y"], expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_named() -> None:
    bundle = mixed_bundle()
    with pytest.raises(SimulationError, match="input 'x' is float64"):
        simulate(bundle, {"x": np.zeros((1, 2, 4, 4))})
    with pytest.raises(SimulationError, match="unknown input"):
        simulate(bundle, {**mixed_inputs(), "z": np.zeros(1, np.float32)})
    with pytest.raises(SimulationError, match="missing input 'x'"):
        simulate(bundle, {})


# ---------------------------------------------------------------------------------------------- broken plans
def test_dropped_wait_is_a_race() -> None:
    bundle = mixed_bundle()
    pc = find(bundle, "npu", lambda i: isinstance(i, Wait))   # conv waits for its input and weights
    broken = edit(bundle, "npu", pc)
    with pytest.raises(SimulationError, match=r"data race at t=0 ns in npu_sram") as caught:
        simulate(broken, mixed_inputs())
    assert "npu[0] compute #0 npu.Conv 'conv'" in str(caught.value) and "dma_npu[0] dma %x" in str(caught.value)
    (expected,) = reference(mixed_model(), mixed_inputs())
    assert wrong(simulate(broken, mixed_inputs(), detect_races=False), expected)


def test_shifted_offset_gives_wrong_numbers() -> None:
    bundle = mixed_bundle()
    pc = find(bundle, "dsp", lambda i: isinstance(i, Compute) and i.op == "Gemm")
    gemm = bundle.programs["dsp"].instructions[pc]
    shifted = replace(gemm.inputs[0], offset=gemm.inputs[0].offset + 64)
    broken = edit(bundle, "dsp", pc, replace(gemm, inputs=(shifted,) + gemm.inputs[1:]))
    (expected,) = reference(mixed_model(), mixed_inputs())
    assert wrong(simulate(broken, mixed_inputs()), expected)


def test_dropped_dma_gives_wrong_numbers() -> None:
    bundle = mixed_bundle()
    pc = find(bundle, "dma_dsp", lambda i: isinstance(i, Dma) and i.value == "scale")
    broken = edit(bundle, "dma_dsp", pc)
    (expected,) = reference(mixed_model(), mixed_inputs())
    assert wrong(simulate(broken, mixed_inputs()), expected)


def test_unreachable_wait_is_a_deadlock() -> None:
    bundle = mixed_bundle()
    pc = find(bundle, "cpu", lambda i: isinstance(i, Wait))
    broken = edit(bundle, "cpu", pc, Wait("sem.dma_dsp", 99))
    with pytest.raises(SimulationError, match=r"deadlock: cpu\[0\] waits for sem.dma_dsp to reach 99 but it only "
                                              r"reached \d+ \(signalled by dma_dsp\)"):
        simulate(broken, functional=False)


def test_circular_wait_is_a_deadlock() -> None:
    bundle = mixed_bundle()
    # dma_npu would first wait for the npu's first signal, which comes after the npu waits for dma_npu.
    broken = edit(bundle, "dma_npu", 0, Wait("sem.npu", 1))
    with pytest.raises(SimulationError, match=r"deadlock: .*npu\[0\] waits for sem.dma_npu.*dma_npu\[0\] waits "
                                              r"for sem.npu"):
        simulate(broken, functional=False)


def test_in_place_reshape_is_not_a_write() -> None:
    bundle = mixed_bundle()
    npu = bundle.programs["npu"].instructions
    flatten = next(i for i in npu if getattr(i, "op", "") == "Flatten")
    assert [write for *_, write in accesses(flatten)] == [False, False]
    relu = next(i for i in npu if getattr(i, "op", "") == "Relu")
    assert [write for *_, write in accesses(relu)] == [False, True]


def test_dram_sharing_is_an_exact_fluid() -> None:
    """Two DMAs from DRAM each asking 10 B/ns of a 10 B/ns DRAM run at half speed while both run: the short
    one (50 ns alone) ends at 100 ns, the long one (100 ns alone) has done half its work then and ends at 150."""
    bundle = mixed_bundle()
    dram = bundle.manifest["machine"]["memories"]["dram"]

    def copy(task: int, nbytes: int, offset: int, dst: str) -> Dma:
        src = Operand(f"a{task}", "v", "dram", offset, "uint8", (nbytes,), (1,), nbytes)
        to = Operand(f"b{task}", "v", dst, 0, "uint8", (nbytes,), (1,), nbytes)
        return Dma(task, "v", src, to, nbytes, nbytes // 10, 0, nbytes // 10, nbytes)

    programs = {name: replace(p, instructions=()) for name, p in bundle.programs.items()}
    programs["dma_npu"] = replace(programs["dma_npu"], instructions=(copy(0, 1000, 0, "npu_sram"),))
    programs["dma_dsp"] = replace(programs["dma_dsp"], instructions=(copy(1, 500, 1024, "dsp_tcm"),))
    machine = {**bundle.manifest["machine"], "memories": {**bundle.manifest["machine"]["memories"],
                                                         "dram": {**dram, "bandwidth": 10.0}}}
    shared = replace(bundle, programs=programs, manifest={**bundle.manifest, "machine": machine})
    ends = {e.engine: e.end_ns for e in simulate(shared, functional=False).events}
    assert ends == {"dma_npu": pytest.approx(150.0), "dma_dsp": pytest.approx(100.0)}
    alone = {e.engine: e.end_ns for e in simulate(shared, functional=False, contention=False).events}
    assert alone == {"dma_npu": 100.0, "dma_dsp": 50.0}


def test_fp16_precision_reaches_the_kernels() -> None:
    exact = simulate(mixed_bundle(), mixed_inputs())
    half = simulate(mixed_bundle(), mixed_inputs(), precision="fp16")
    assert half.stats["precision"] == "fp16"
    difference = np.abs(half.outputs["y"] - exact.outputs["y"]).max()
    assert 0 < difference < 0.05   # the NPU (conv here) rounds through fp16; the DSP and CPU compute in fp32


def test_dram_sharing_follows_users_that_come_and_go() -> None:
    """dma_npu copies 1000 B (100 ns alone) while dma_dsp copies 300 B twice in a row (30 ns alone each), all
    asking 10 B/ns of a 10 B/ns DRAM: both copies on dma_dsp run at half speed (0-60, 60-120 ns); dma_npu has
    done 60 ns of work by then and finishes the rest alone at full speed (160 ns). With DRAM to spare, each
    runs at its own speed."""
    bundle = mixed_bundle()

    def copy(task: int, nbytes: int, offset: int, dst: str) -> Dma:
        src = Operand(f"a{task}", "v", "dram", offset, "uint8", (nbytes,), (1,), nbytes)
        to = Operand(f"b{task}", "v", dst, offset, "uint8", (nbytes,), (1,), nbytes)
        return Dma(task, "v", src, to, nbytes, nbytes // 10, 0, nbytes // 10, nbytes)

    programs = {name: replace(p, instructions=()) for name, p in bundle.programs.items()}
    programs["dma_npu"] = replace(programs["dma_npu"], instructions=(copy(0, 1000, 0, "npu_sram"),))
    programs["dma_dsp"] = replace(programs["dma_dsp"], instructions=(copy(1, 300, 1024, "dsp_tcm"),
                                                                     copy(2, 300, 2048, "dsp_tcm")))

    def ends(bandwidth: float) -> dict[tuple[str, int], float]:
        memories = {**bundle.manifest["machine"]["memories"]}
        memories["dram"] = {**memories["dram"], "bandwidth": bandwidth}
        manifest = {**bundle.manifest, "machine": {**bundle.manifest["machine"], "memories": memories}}
        result = simulate(replace(bundle, programs=programs, manifest=manifest), functional=False)
        return {(e.engine, e.index): e.end_ns for e in result.events}

    assert ends(10.0) == {("dma_npu", 0): pytest.approx(160.0), ("dma_dsp", 0): pytest.approx(60.0),
                          ("dma_dsp", 1): pytest.approx(120.0)}
    assert ends(1000.0) == {("dma_npu", 0): 100.0, ("dma_dsp", 0): 30.0, ("dma_dsp", 1): 60.0}
