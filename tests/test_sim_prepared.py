"""The prepared simulator: repeated runs give the bytes a fresh simulation gives, whatever ran before, on
sound and on broken plans, in both replay modes; ``simulate`` keeps one prepared simulation."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest

from hetc.codegen import Compute, Dma, Wait, emit
from hetc.errors import SimulationError
from hetc.frontend import load_onnx
from hetc.passes import optimize
from hetc.sim import PreparedSimulation, random_inputs, simulate
from hetc.sim.functional import _Intervals
from hetc.sim.kernels import run_kernel
from hetc.sim.kernels.dispatch import bind_kernel
from handplan import cost_duration, plan_by_hand
from hetc.sim.simulate import forget_prepared
from hetc.target import load_target

from test_sim import edit, find
from test_sim_support import REPO, mixed_bundle, mixed_inputs, mixed_model, reference


def other_inputs(seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((1, 2, 4, 4)).astype(np.float32)}


def fresh(bundle, inputs, **options) -> dict[str, np.ndarray]:
    """The outputs of a simulation prepared for this run alone."""
    return PreparedSimulation(bundle, **options).run(inputs).outputs


def same_bytes(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def tiny_cnn_bundle():
    path = REPO / "models" / "tiny_cnn.onnx"
    graph = optimize(load_onnx(path))
    target = load_target("edge-soc")
    placement = {}
    for k, node in enumerate(graph.nodes):   # every device, the CPU path included
        ok = [d for d in ("npu", "dsp", "cpu") if target.supports(node, d)] or ["cpu"]
        placement[node.id] = ok[k % len(ok)]
    return path, emit(graph, plan_by_hand(graph, target, placement, cost_duration(target)), target)


@pytest.mark.parametrize("detect_races", [True, False])   # whole-step replay, read-at-start/write-at-end
def test_repeated_runs_give_fresh_bytes(detect_races: bool) -> None:
    bundle = mixed_bundle()
    prepared = PreparedSimulation(bundle, detect_races=detect_races)
    assert prepared.replay.whole is detect_races
    runs = [mixed_inputs(), other_inputs(1), other_inputs(2), mixed_inputs()]
    outputs = [prepared.run(x).outputs for x in runs]
    for x, out in zip(runs, outputs):
        assert same_bytes(out, fresh(bundle, x, detect_races=detect_races))
    assert same_bytes(outputs[0], outputs[3]) and not same_bytes(outputs[0], outputs[1])
    (expected,) = reference(mixed_model(), runs[1])
    np.testing.assert_allclose(outputs[1]["y"], expected, rtol=1e-5, atol=1e-5)


def test_tiny_cnn_on_every_device_repeats_exactly() -> None:
    path, bundle = tiny_cnn_bundle()
    prepared = PreparedSimulation(bundle)
    for seed in (1, 2, 1):
        inputs = random_inputs(bundle, seed=seed)
        out = prepared.run(inputs).outputs
        assert same_bytes(out, fresh(bundle, inputs))
        (expected,) = reference(onnx.load(path), inputs)
        np.testing.assert_allclose(out["logits"], expected, rtol=1e-4, atol=1e-4)


def test_result_is_the_fresh_result_but_the_outputs() -> None:
    bundle = mixed_bundle()
    prepared = PreparedSimulation(bundle)
    first, second = prepared.run(mixed_inputs()), prepared.run(other_inputs(5))
    baseline = PreparedSimulation(bundle).run(other_inputs(5))
    for r in (first, second):
        assert r.events == baseline.events and r.sync_edges == baseline.sync_edges
        assert r.memory_usage == baseline.memory_usage and r.makespan_ns == baseline.makespan_ns
    assert first.outputs["y"] is not second.outputs["y"]   # each run hands out its own arrays
    assert prepared.run(functional=False).outputs is None


def test_sound_plan_resets_nothing_between_runs() -> None:
    assert PreparedSimulation(mixed_bundle()).replay.resets == []


def test_bytes_no_run_writes_read_as_zeros_in_every_run() -> None:
    """Mul reads its 'scale' from bytes past everything the plan uses, which no run writes: each run must see
    zeros there, as on fresh memories, never the bytes a previous run (or anything else) left."""
    bundle = mixed_bundle()
    pc = find(bundle, "dsp", lambda i: isinstance(i, Compute) and i.op == "Mul")
    mul = bundle.programs["dsp"].instructions[pc]
    beyond = replace(mul.inputs[1], offset=bundle.manifest["machine"]["memories"]["dsp_tcm"]["extent"] + 64)
    broken = edit(bundle, "dsp", pc, replace(mul, inputs=(mul.inputs[0], beyond)))
    prepared = PreparedSimulation(broken)
    assert [r.size for r in prepared.replay.resets] == [beyond.nbytes]
    for x in (mixed_inputs(), other_inputs(3)):
        for region in prepared.replay.resets:
            region.fill(0x5A)   # what another run might have left there
        out = prepared.run(x).outputs
        assert same_bytes(out, fresh(broken, x))
        (expected,) = reference(mixed_model(), x)
        assert not np.allclose(out["y"], expected, atol=1e-4)


def test_dropped_dma_repeats_its_wrong_bytes() -> None:
    bundle = mixed_bundle()
    broken = edit(bundle, "dma_dsp", find(bundle, "dma_dsp", lambda i: isinstance(i, Dma) and i.value == "scale"))
    prepared = PreparedSimulation(broken)
    for x in (mixed_inputs(), other_inputs(3), mixed_inputs()):
        assert same_bytes(prepared.run(x).outputs, fresh(broken, x))


def test_shifted_offset_repeats_its_wrong_bytes() -> None:
    bundle = mixed_bundle()
    pc = find(bundle, "dsp", lambda i: isinstance(i, Compute) and i.op == "Gemm")
    gemm = bundle.programs["dsp"].instructions[pc]
    shifted = replace(gemm.inputs[0], offset=gemm.inputs[0].offset + 64)
    broken = edit(bundle, "dsp", pc, replace(gemm, inputs=(shifted,) + gemm.inputs[1:]))
    prepared = PreparedSimulation(broken)
    for x in (other_inputs(4), mixed_inputs(), other_inputs(4)):
        assert same_bytes(prepared.run(x).outputs, fresh(broken, x))


def test_a_race_is_found_when_preparing() -> None:
    bundle = mixed_bundle()
    broken = edit(bundle, "npu", find(bundle, "npu", lambda i: isinstance(i, Wait)))
    with pytest.raises(SimulationError, match="data race"):
        PreparedSimulation(broken)


def test_simulate_keeps_one_prepared_simulation() -> None:
    forget_prepared()
    bundle = mixed_bundle()
    first = simulate(bundle, mixed_inputs())
    again = simulate(bundle, other_inputs(6))
    assert first.stats["prepare_s"] > 0 and again.stats["prepare_s"] == 0
    assert same_bytes(again.outputs, fresh(bundle, other_inputs(6)))
    summarised = bundle.with_summary({"note": 1}).with_report("report")   # what simulation reads is the same
    assert simulate(summarised, mixed_inputs()).stats["prepare_s"] == 0
    copy = replace(bundle, programs=dict(bundle.programs))   # equal but distinct programs are prepared anew
    assert simulate(copy, mixed_inputs()).stats["prepare_s"] > 0
    assert simulate(bundle, mixed_inputs()).stats["prepare_s"] > 0   # one simulation is kept
    assert simulate(bundle, mixed_inputs(), precision="fp16").stats["prepare_s"] > 0
    forget_prepared()


def test_intervals_match_a_byte_mask() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        intervals, mask = _Intervals(), np.zeros(200, bool)
        for _ in range(12):
            lo, hi = sorted(int(v) for v in rng.integers(0, 200, 2))
            gaps = np.zeros(200, bool)
            for a, b in intervals.gaps(lo, hi):
                gaps[a:b] = True
            expected = np.zeros(200, bool)
            expected[lo:hi] = ~mask[lo:hi]
            assert np.array_equal(gaps, expected)
            intervals.add(lo, hi)
            mask[lo:hi] = True
            covered = np.zeros(200, bool)
            for a, b in intervals.spans():
                covered[a:b] = True
            assert np.array_equal(covered, mask)
            assert all(b < c for (_, b), (c, _) in zip(intervals.spans(), intervals.spans()[1:]))


@pytest.mark.parametrize("device", ["npu", "cpu"])
def test_bound_kernel_computes_into_out_and_follows_its_inputs(device: str) -> None:
    """A bound Add writes into the destination it was given (numpy out= on the NPU, onnxruntime io binding
    on the CPU after the call that finds the session) and reads its inputs' current contents every call."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(2))
    out = np.zeros((2, 3, 4), np.float32)
    spec = [("float32", (2, 3, 4))]
    bound = bind_kernel(device, "Add", "", {}, [a, b], spec, {"": 17}, out=[out])
    bound()
    a[...] = rng.standard_normal(a.shape)   # new contents, same arrays
    (result,) = bound()
    assert result is out
    assert np.array_equal(out, run_kernel(device, "Add", "", {}, [a, b], spec, {"": 17})[0])
