"""Tiled graphs (hetc.ir.tiles) planned, emitted and simulated: Regions read in place at offsets with strides,
Assemble parts written in place, the numbers equal onnxruntime on the untiled model (random He weights)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hetc.codegen import emit
from hetc.ir import Graph
from hetc.memory import plan_memory
from hetc.sim.simulate import simulate
from test_memory_planner import make_target
from tiling_helpers import (TiledBuilder, conv_by_channels, conv_by_rows, conv_model, hand_schedule,
                            he_weights, onnxruntime_outputs)
from hetc.ir import Value

X_SHAPE, Y_SHAPE = (1, 4, 12, 10), (1, 6, 12, 10)


def three_layers(seed: int = 0):
    """Conv A (rows, 2 tiles) -> Relu -> Conv B (rows, 2 tiles, one region of a region) -> Conv C 1x1
    (output channels, 2 tiles): the tiled graph and the untiled ONNX model it must compute."""
    rng = np.random.default_rng(seed)
    wa, ba = he_weights(rng, (8, 4, 3, 3)), rng.standard_normal(8).astype(np.float32) * 0.1
    wb, bb = he_weights(rng, (6, 8, 3, 3)), rng.standard_normal(6).astype(np.float32) * 0.1
    wc, bc = he_weights(rng, (6, 6, 1, 1)), rng.standard_normal(6).astype(np.float32) * 0.1
    model = conv_model([("A+relu", wa, ba, [1, 1, 1, 1]), ("B", wb, bb, [1, 1, 1, 1]), ("C", wc, bc, [0] * 4)],
                       X_SHAPE, Y_SHAPE)
    t = TiledBuilder()
    x = Value("x", "float32", X_SHAPE)
    a = conv_by_rows(t, "A", x, wa, ba, 2)
    r = t.op("Relu", "A_relu", [a], a.shape)
    b = conv_by_rows(t, "B", r, wb, bb, 2, region_of_region=True)
    y = conv_by_channels(t, "y", b, wc, bc, 2, [0, 0, 0, 0])
    graph = Graph.build("tiled", t.nodes, [x], [y], {"": 17})
    return graph, model


PLACEMENTS = {
    # tile 0 of every layer on the NPU (regions brought by strided DMA, parts sent back into place),
    # tile 1 on the CPU (regions read in place in DRAM, parts written in place); Relu on the NPU, so
    # layer B's regions live in the NPU's SRAM: one read in place there, one sent to the CPU by DMA.
    "mixed": {"A_t0": "npu", "A_relu": "npu", "B_t0": "npu", "y_t0": "npu"},
    "npu": {"A_t0": "npu", "A_t1": "npu", "A_relu": "npu", "B_t0": "npu", "B_t1": "npu", "y_t0": "npu",
            "y_t1": "npu"},
    "cpu": {},
}


def build(placement: dict[str, str], seed: int = 0):
    graph, model = three_layers(seed)
    target = make_target()
    schedule = hand_schedule(graph, target, placement)
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    return graph, model, target, plan


def inputs(seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(X_SHAPE).astype(np.float32)}


@pytest.mark.parametrize("where", sorted(PLACEMENTS))
def test_tiled_layers_compute_what_onnxruntime_computes_untiled(where):
    graph, model, target, plan = build(PLACEMENTS[where])
    bundle = emit(graph, plan, target)
    result = simulate(bundle, inputs())
    (expected,) = onnxruntime_outputs(model, inputs())
    assert np.abs(expected).max() > 0.1                          # the layers do not collapse to zero
    np.testing.assert_allclose(result.outputs["y"], expected, rtol=1e-4, atol=1e-4)


def test_alias_nodes_emit_no_instruction_and_operands_carry_offsets_and_strides():
    graph, _, target, plan = build(PLACEMENTS["mixed"])
    bundle = emit(graph, plan, target)
    computes = [i for p in bundle.programs.values() for i in p.instructions if i.kind == "compute"]
    assert {c.op for c in computes} == {"Conv", "Relu"}          # no Region, no Assemble
    assert len(computes) == 7
    cpu_tile = next(c for c in computes if c.name == "A_t1")
    region = cpu_tile.inputs[0]
    x = plan.buffer("x@dram")
    assert region.memory == "dram" and not region.dense
    assert region.offset == x.offset + 5 * 10 * 4                 # rows 5.. of x (halo row 5 included)
    assert region.strides == (4 * 12 * 10 * 4, 12 * 10 * 4, 10 * 4, 4)   # x's strides
    part = cpu_tile.outputs[0]
    a = plan.buffer("A@dram")
    assert part.offset == a.offset + 6 * 10 * 4 and part.strides == (8 * 12 * 10 * 4, 12 * 10 * 4, 10 * 4, 4)
    assert part.storage == "A@dram"
    dmas = [i for p in bundle.programs.values() for i in p.instructions if i.kind == "dma"]
    into_place = next(d for d in dmas if d.value == "A_t0")
    assert into_place.dst.offset == a.offset and not into_place.dst.dense
    assert into_place.bytes == 8 * 6 * 10 * 4                     # the tile's element bytes
    assert "strides=" in bundle.programs["dma"].asm()


def test_region_of_a_region_composes_offsets():
    graph, _, target, plan = build(PLACEMENTS["mixed"])
    r = plan.buffer("A_relu@sram")                    # Relu wrote over its input's copy: the group's owner
    outer, inner = plan.buffer("B_outer1@sram"), plan.buffer("B_in1@sram")
    assert outer.alias_of == inner.alias_of == (r.alias_of or r.id)
    assert outer.offset == r.offset + 3 * 10 * 4 and inner.offset == r.offset + 5 * 10 * 4
    assert inner.strides == outer.strides == (8 * 12 * 10 * 4, 12 * 10 * 4, 10 * 4, 4)


def _shifted(plan, buffer_id: str, by: int):
    return replace(plan, buffers=tuple(replace(b, offset=b.offset + by) if b.id == buffer_id else b
                                       for b in plan.buffers))


def test_a_wrong_region_offset_gives_wrong_numbers():
    graph, model, target, plan = build(PLACEMENTS["mixed"])
    (expected,) = onnxruntime_outputs(model, inputs())
    good = simulate(emit(graph, plan, target), inputs()).outputs["y"]
    np.testing.assert_allclose(good, expected, rtol=1e-4, atol=1e-4)
    # Layer B's first tile reads its region (in SRAM, in place) one row too low: still inside its base, so
    # the plan verifies, and the halo is wrong.
    bad_plan = _shifted(plan, "B_in0@sram", 10 * 4)
    assert bad_plan.violations(target) == []
    bad = simulate(emit(graph, bad_plan, target), inputs()).outputs["y"]
    assert not np.allclose(bad, expected, rtol=1e-3, atol=1e-3)


def test_a_region_reaching_past_its_base_is_refused():
    graph, _, target, plan = build(PLACEMENTS["mixed"])
    bad_plan = _shifted(plan, "A_in1@dram", 10 * 4)     # the last rows of x, moved one row further
    problems = bad_plan.violations(target)
    assert any("'A_in1@dram'" in p and "outside its owner 'x@dram'" in p for p in problems)


def test_a_part_written_at_the_wrong_offset_gives_wrong_numbers():
    graph, model, target, plan = build(PLACEMENTS["mixed"])
    (expected,) = onnxruntime_outputs(model, inputs())
    # Layer C's CPU tile writes its channels one channel too early, over the NPU tile's last channel.
    bad_plan = _shifted(plan, "y_t1@dram", -12 * 10 * 4)
    assert bad_plan.violations(target) == []
    bad = simulate(emit(graph, bad_plan, target), inputs(), detect_races=False).outputs["y"]
    assert not np.allclose(bad, expected, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------ races
def one_row_tiled_conv():
    """x -> Conv by rows (tile 0 on the NPU, its part sent into place by DMA; tile 1 a long CPU task writing
    its part in place meanwhile) -> y: two engines write interleaved row bands of one NCHW tensor at once."""
    rng = np.random.default_rng(5)
    w, b = he_weights(rng, (8, 4, 3, 3)), rng.standard_normal(8).astype(np.float32) * 0.1
    model = conv_model([("y", w, b, [1, 1, 1, 1])], X_SHAPE, (1, 8, 12, 10))
    t = TiledBuilder()
    x = Value("x", "float32", X_SHAPE)
    y = conv_by_rows(t, "y", x, w, b, 2)
    graph = Graph.build("tiled", t.nodes, [x], [y], {"": 17})
    target = make_target()
    schedule = hand_schedule(graph, target, {"y_t0": "npu"}, durations={"y_t1": 20_000})
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    return graph, model, target, plan


def _writers_of_y(prepared, bundle):
    """(dma writing tile 0's part, CPU compute writing tile 1's part): their instructions and traced times."""
    machine = prepared.machine
    found = {}
    for e, pc, start, end in prepared.trace.records:
        ins = machine.programs[e][pc]
        if ins.kind == "dma" and ins.value == "y_t0" and ins.dst.memory == "dram":
            found["dma"] = (ins.dst, start, end)
        if ins.kind == "compute" and ins.name == "y_t1":
            found["cpu"] = (ins.outputs[0], start, end)
    return found["dma"], found["cpu"]


def test_interleaved_row_tiles_written_concurrently_are_not_a_race():
    from hetc.sim.prepared import PreparedSimulation
    graph, model, target, plan = one_row_tiled_conv()
    bundle = emit(graph, plan, target)
    prepared = PreparedSimulation(bundle)            # the race detector runs here
    (dma_dst, a0, a1), (cpu_out, b0, b1) = _writers_of_y(prepared, bundle)
    assert a0 < b1 and b0 < a1                        # they do run at the same time ...
    assert dma_dst.offset < cpu_out.end and cpu_out.offset < dma_dst.end   # ... within the same byte range
    assert len(dma_dst.runs()) == len(cpu_out.runs()) == 8                 # one run per channel, disjoint
    (expected,) = onnxruntime_outputs(model, inputs())
    np.testing.assert_allclose(prepared.run(inputs()).outputs["y"], expected, rtol=1e-4, atol=1e-4)


def test_a_strided_write_over_another_tiles_rows_is_a_race():
    from hetc.errors import SimulationError
    graph, _, target, plan = one_row_tiled_conv()
    bad_plan = _shifted(plan, "y_t1@dram", -10 * 4)    # tile 1 starts one row early: over tile 0's last row
    assert bad_plan.violations(target) == []           # inside y, same group: only the timing can tell
    with pytest.raises(SimulationError, match="data race"):
        simulate(emit(graph, bad_plan, target), inputs())


def test_regions_of_an_assemble_output_feed_the_next_layer():
    """Conv A by rows -> its Assemble output in DRAM -> Conv B by rows reading Regions of it (one a region of a
    region): B's NPU tile gets its region by a strided DMA out of A's bytes, its CPU tile reads in place."""
    rng = np.random.default_rng(11)
    wa, ba = he_weights(rng, (8, 4, 3, 3)), rng.standard_normal(8).astype(np.float32) * 0.1
    wb, bb = he_weights(rng, (5, 8, 3, 3)), rng.standard_normal(5).astype(np.float32) * 0.1
    model = conv_model([("A", wa, ba, [1, 1, 1, 1]), ("B", wb, bb, [1, 1, 1, 1])], X_SHAPE, (1, 5, 12, 10))
    t = TiledBuilder()
    x = Value("x", "float32", X_SHAPE)
    a = conv_by_rows(t, "A", x, wa, ba, 3)
    y = conv_by_rows(t, "y", a, wb, bb, 3, region_of_region=True)
    graph = Graph.build("tiled", t.nodes, [x], [y], {"": 17})
    target = make_target()
    plan = plan_memory(graph, hand_schedule(graph, target, {"A_t0": "npu", "A_t2": "npu", "y_t1": "npu"}),
                       target)
    plan.verify(target)
    owner = plan.buffer("A@dram")
    assert {plan.buffer(f"y_in{k}@dram").alias_of for k in range(3)} == {"A@dram"}
    assert plan.buffer("y_in2@dram").offset == owner.offset + 7 * 10 * 4       # rows 7.. through rows 5..
    (expected,) = onnxruntime_outputs(model, inputs())
    result = simulate(emit(graph, plan, target), inputs())
    np.testing.assert_allclose(result.outputs["y"], expected, rtol=1e-4, atol=1e-4)


def test_a_saved_tiled_bundle_loads_and_computes_the_same(tmp_path):
    """On a target read from TOML (embedded in the bundle, so it loads), with a semaphore cost."""
    from hetc.codegen.bundle import load_bundle
    from test_sim_support import toy_target
    graph, model = three_layers()
    target = toy_target()
    plan = plan_memory(graph, hand_schedule(graph, target, PLACEMENTS["mixed"]), target)
    plan.verify(target)
    emit(graph, plan, target).save(tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")              # load-time bounds: regions at unaligned offsets pass
    strided = [o for p in loaded.programs.values() for i in p.instructions if i.kind == "compute"
               for o in i.inputs if o is not None and not o.dense]
    assert any(o.offset % 64 for o in strided)
    assert loaded.memory_plan().buffer("A_in1@dram").strides == (4 * 12 * 10 * 4, 12 * 10 * 4, 10 * 4, 4)
    (expected,) = onnxruntime_outputs(model, inputs())
    np.testing.assert_allclose(simulate(loaded, inputs()).outputs["y"], expected, rtol=1e-4, atol=1e-4)


def test_alias_nodes_cost_no_copy():
    """Eight row tiles of one Conv, every other one on the NPU: the only activation traffic is each NPU tile's
    region in and part out (nothing assembles or slices by copying), and the result is onnxruntime's."""
    shape = (1, 16, 28, 28)
    rng = np.random.default_rng(3)
    w, b = he_weights(rng, (16, 16, 3, 3)), rng.standard_normal(16).astype(np.float32) * 0.1
    model = conv_model([("y", w, b, [1, 1, 1, 1])], shape, shape)
    t = TiledBuilder()
    x = Value("x", "float32", shape)
    y = conv_by_rows(t, "y", x, w, b, 8)
    graph = Graph.build("tiled", t.nodes, [x], [y], {"": 17})
    target = make_target(sram=1 << 20)
    npu = {f"y_t{k}" for k in range(0, 8, 2)}
    plan = plan_memory(graph, hand_schedule(graph, target, dict.fromkeys(npu, "npu")), target)
    plan.verify(target)
    bundle = emit(graph, plan, target)
    moved = [i for p in bundle.programs.values() for i in p.instructions
             if i.kind == "dma" and not graph.values[i.value].is_const]
    tiles = [n for n in graph if n.name in npu]
    assert sorted(d.bytes for d in moved) == sorted([n.inputs[0].nbytes for n in tiles] +
                                                    [n.outputs[0].nbytes for n in tiles])
    assert all(len((d.src if d.dst.memory == "sram" else d.dst).runs()) == 16 for d in moved)   # 16 channels
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    (expected,) = onnxruntime_outputs(model, feeds)
    np.testing.assert_allclose(simulate(bundle, feeds).outputs["y"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype, strides, dense", [
    ("int4", (2, 0), True),          # a packed 3x4 int4 tensor as codegen writes it: half a byte per element
    ("uint2", (1, 0), True),         # a quarter of a byte
    ("int4", (4, 0), False),         # every other row of a wider tensor
    ("float32", (16, 4), True),
    ("float32", (32, 4), False),
])
def test_sub_byte_tensors_are_dense_in_c_order(dtype, strides, dense):
    from hetc.codegen.program import Operand
    from hetc.ir import nbytes as tensor_bytes
    o = Operand(buffer="b", value="v", memory="dram", offset=0, dtype=dtype, shape=(3, 4), strides=strides,
                nbytes=tensor_bytes(dtype, (3, 4)))
    assert o.dense is dense


@pytest.mark.parametrize("strategy", ["heft", "cpsat"])
def test_tiles_joined_in_the_shared_l2_compute_what_onnxruntime_computes(strategy):
    """multi-npu: the layers' Assembles that are not the graph output live in the L2 the cores share; each
    core's part is written there in place by DMA, the next layer's regions are read from there, and the
    numbers are onnxruntime's."""
    from hetc.schedule import schedule
    from hetc.target import load_target
    graph, model = three_layers()
    target = load_target("multi-npu")
    sched = schedule(graph, target, strategy, time_limit_s=2.0)
    plan = plan_memory(graph, sched, target)
    plan.verify(target)
    assembles = {n.outputs[0].name: sched.aliases[n.id] for n in graph.nodes if n.op_type == "Assemble"}
    assert assembles == {"A": "l2", "B": "l2", "y": "dram"}
    assert plan.buffer("A@l2").memory == "l2"
    into_l2 = [t for t in plan.schedule.tasks if t.kind == "transfer" and t.dst == "l2" and t.src != "dram"]
    assert into_l2, "no part was written into the L2 from a core"
    result = simulate(emit(graph, plan, target), inputs())
    (expected,) = onnxruntime_outputs(model, inputs())
    np.testing.assert_allclose(result.outputs["y"], expected, rtol=1e-4, atol=1e-4)


def test_a_plan_that_overflows_the_l2_joins_in_dram_instead():
    """The scheduler does not see the L2's capacity: where the values joined there overflow it, the build
    plans again with every value joined in DRAM (hetc.planning), and the numbers are still right. The
    overflow is forced: a ``join_fraction`` of 2 joins in a 2 KiB L2 values of 3,840 B."""
    from hetc.errors import MemoryPlanError
    from hetc.planning import SchedulingChoices, _plan_tiled, plan_tiled
    from hetc.stages import StageClock
    from hetc.target import load_target, target_from_toml_text
    from tiler_helpers import run
    rng = np.random.default_rng(3)
    t = TiledBuilder()
    x = Value("x", "float32", X_SHAPE)
    a = conv_by_rows(t, "A", x, he_weights(rng, (8, 4, 3, 3)), rng.standard_normal(8).astype(np.float32), 2)
    b = conv_by_rows(t, "B", a, he_weights(rng, (8, 8, 3, 3)), rng.standard_normal(8).astype(np.float32), 2)
    y = t.op("Add", "y", [a, b], a.shape)
    graph = Graph.build("residual", t.nodes, [x], [y], {"": 17})
    small = load_target("multi-npu").source.replace('size = "8MiB"', 'size = "2KiB"', 1)
    target = replace(target_from_toml_text(small, "small-l2"), join_fraction=2.0, _cache={})
    assert target.join_memory(a.nbytes) == "l2"
    choices = SchedulingChoices("heft", None, 1, 0, tiling=False)
    with pytest.raises(MemoryPlanError) as raised:
        _plan_tiled(graph, target, choices, StageClock())
    assert raised.value.memory == "l2"
    shipped, plan = plan_tiled(graph, target, choices, StageClock())
    plan.verify(target)
    plan.schedule.verify(shipped, target)
    assert {plan.schedule.aliases[n.id] for n in shipped.nodes if n.op_type == "Assemble"} == {"dram"}
    result = simulate(emit(shipped, plan, target), inputs())
    np.testing.assert_allclose(result.outputs["y"], run(graph, seed=1)["y"], rtol=1e-4, atol=1e-4)
