"""Codegen and simulation on plans from the real memory planner (in-place aliasing, address reuse, spills)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from hetc.codegen import EmitOptions, emit
from hetc.frontend import load_onnx
from hetc.memory import plan_memory
from hetc.passes import optimize
from hetc.schedule import placement_rows, schedule
from hetc.sim import random_inputs, simulate
from handplan import cost_duration, first_candidate_placement, plan_by_hand
from hetc.target import load_target, target_from_toml_text

from test_codegen import unordered
from test_sim_support import REPO, reference


def build(model: str, npu_sram: str | None = None, mixed: bool = False):
    target = load_target("edge-soc")
    if npu_sram:
        target = target_from_toml_text(target.source.replace('size = "8MiB"', f'size = "{npu_sram}"'), "small")
    graph = optimize(load_onnx(REPO / "models" / f"{model}.onnx"))
    placement = first_candidate_placement(graph, target)
    if mixed:   # alternate NPU and DSP where both can run a node, to force scratchpad-to-scratchpad copies
        for k, node in enumerate(graph.nodes):
            both = [d for d in ("npu", "dsp") if target.supports(node, d)]
            if len(both) == 2:
                placement[node.id] = both[k % 2]
    schedule = plan_by_hand(graph, target, placement, cost_duration(target)).schedule
    plan = plan_memory(graph, schedule, target)
    return graph, target, plan, emit(graph, plan, target)


@pytest.mark.parametrize("model, npu_sram, mixed", [("tiny_cnn", None, False), ("tiny_cnn", None, True),
                                                    ("mobilenet_v2", None, True), ("unet", "300KiB", False),
                                                    ("unet", "1MiB", False)])
def test_real_plans_simulate_to_onnxruntime(model: str, npu_sram: str | None, mixed: bool) -> None:
    graph, target, plan, bundle = build(model, npu_sram, mixed)
    assert unordered(bundle, plan) == []
    inputs = random_inputs(bundle, seed=2)
    result = simulate(bundle, inputs)
    expected = reference(onnx.load(REPO / "models" / f"{model}.onnx"), inputs)
    for (name, got), want in zip(result.outputs.items(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
    # Semaphores added for address reuse may delay a task by sync_ns beyond the plan, never by much; the plan's
    # durations are rounded up to whole ns and a repaired plan keeps release times, slack an ASAP run may use.
    assert 0.99 * result.planned_makespan_ns <= result.makespan_ns <= 1.05 * result.planned_makespan_ns


def test_spilled_plan_moves_values_through_dram() -> None:
    # Which scratchpad size makes the planner spill (rather than move a node) is its own business: try a few.
    for size in ("1MiB", "700KiB", "300KiB"):
        _, _, plan, bundle = build("unet", size)
        if plan.spills:
            break
    else:
        pytest.skip("the memory planner resolved every small-scratchpad unet plan without spilling")
    inputs = random_inputs(bundle, seed=5)
    (expected,) = reference(onnx.load(REPO / "models" / "unet.onnx"), inputs)
    np.testing.assert_allclose(simulate(bundle, inputs).outputs["y"], expected, rtol=1e-4, atol=1e-4)
    evicts = {s.evict_task for s in plan.spills if s.evict_task is not None}
    emitted = {i.task for p in bundle.programs.values() for i in p.instructions if i.kind == "dma"}
    assert evicts <= emitted


@pytest.mark.parametrize("strategy", ["heft", "cpsat"])
def test_full_pipeline_on_tiny_cnn(strategy: str, tmp_path) -> None:
    from hetc.codegen import load_bundle
    target = load_target("edge-soc")
    path = REPO / "models" / "tiny_cnn.onnx"
    graph = optimize(load_onnx(path))
    plan = plan_memory(graph, schedule(graph, target, strategy, time_limit_s=5), target)

    def bundle():
        return emit(graph, plan, target, EmitOptions(placement_rows=tuple(placement_rows(graph, target,
                                                                                        plan.schedule))))
    first = bundle()
    assert first.files() == bundle().files()   # deterministic
    assert unordered(first, plan) == []
    first.save(tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    inputs = random_inputs(loaded, seed=4)
    result = simulate(loaded, inputs)
    (expected,) = reference(onnx.load(path), inputs)
    np.testing.assert_allclose(result.outputs["logits"], expected, rtol=1e-4, atol=1e-4)
    assert result.events == simulate(first, inputs).events


@pytest.mark.parametrize("model, target", [("tiny_cnn", "multi-npu"), ("mobilenet_v2", "edge-soc"),
                                           ("moe", "multi-npu")])
def test_whole_builds_order_every_reuse_of_bytes(model: str, target: str) -> None:
    """Codegen orders address reuse from the planner's ``reuse_deps`` alone (the rule is stated once, in
    hetc.memory.reuse): on whole builds (tiling, double buffering, repairs) every pair the brute force of
    test_codegen derives from the buffers is ordered by the programs, and the reuse dependencies are needed."""
    from dataclasses import replace
    from hetc.pipeline import BuildOptions, build as build_model

    result = build_model(REPO / "models" / f"{model}.onnx", BuildOptions(target=target))
    assert result.plan.reuse_deps
    assert unordered(result.bundle, result.plan) == []
    without = emit(result.graph, replace(result.plan, reuse_deps={}), result.target)
    assert unordered(without, result.plan)
