"""Alias groups at offsets with strides (hetc.memory.aliasing): a Region's buffer lies in its base's bytes, an
Assemble part's DRAM buffer in the output's, positions compose, the planner packs only owners and never splits
such a group, verify() checks every member against its owner, memory.json and schedule.json carry it all."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from hetc.codegen import emit
from hetc.codegen.bounds import bounds_violations
from hetc.errors import MemoryPlanError
from hetc.ir import Graph, Value, to_onnx
from hetc.memory import MemoryPlan, plan_memory
from hetc.memory.aliasing import resolve_aliases
from hetc.memory.lifetimes import build_table
from hetc.memory.layout import group_storages
from hetc.memory.planner import _regioned
from hetc.memory.spill import spill_candidates
from hetc.schedule.artifact import Schedule
from hetc.sim.simulate import simulate
from test_memory_planner import make_target
from test_sim_regions import PLACEMENTS, build
from tiling_helpers import TiledBuilder, hand_schedule, he_weights, onnxruntime_outputs

ROW = 10 * 4            # one row of a [.., .., 12, 10] float32 tensor


def test_region_and_part_members_sit_at_their_offsets_with_their_bases_strides():
    graph, _, target, plan = build(PLACEMENTS["mixed"])
    x, a = plan.buffer("x@dram"), plan.buffer("A@dram")
    region = plan.buffer("A_in1@dram")
    assert region.alias_of == "x@dram" and region.offset == x.offset + 5 * ROW
    assert region.strides == (4 * 12 * ROW, 12 * ROW, ROW, 4) and region.size == 4 * 7 * ROW
    first, second = plan.buffer("A_t0@dram"), plan.buffer("A_t1@dram")    # parts: by DMA, by the CPU
    assert first.alias_of == second.alias_of == "A@dram"
    assert (first.offset, second.offset) == (a.offset, a.offset + 6 * ROW)
    assert first.strides == second.strides == (8 * 12 * ROW, 12 * ROW, ROW, 4)
    # a channel block of an N=1 tensor is contiguous: an offset, no strides
    channels = plan.buffer("y_t1@dram")
    assert channels.alias_of == "y@dram" and channels.strides is None
    assert channels.offset == plan.buffer("y@dram").offset + 3 * 12 * ROW
    # Regions of an Assemble output, read in DRAM by the CPU tile of the next layer
    assert plan.buffer("y_t1@dram").alias_of == "y@dram"


def test_the_group_is_one_storage_live_over_its_members():
    graph, _, target, _ = build(PLACEMENTS["mixed"])
    schedule = hand_schedule(graph, target, PLACEMENTS["mixed"])
    table = build_table(graph, schedule, target)
    aliases = resolve_aliases(table, schedule, graph.node_map())
    lifetimes = table.lifetimes(schedule)
    storages = {s.owner: s for s in group_storages(table, lifetimes, aliases)}
    a = storages["A@dram"]
    assert set(a.members) >= {"A@dram", "A_t0@dram", "A_t1@dram"}
    assert "A_t0@dram" not in storages and "A_t1@dram" not in storages     # only owners are packed
    assert a.start == min(lifetimes[m][0] for m in a.members) < lifetimes["A@dram"][1]
    assert a.end == max(lifetimes[m][1] for m in a.members)
    assert a.size == table.buffers["A@dram"].size
    # The Assemble output, which no task writes, is live from its first part's writer on
    assert lifetimes["A@dram"][0] == min(lifetimes["A_t0@dram"][0], lifetimes["A_t1@dram"][0])


def test_memory_json_and_schedule_json_carry_strides_and_alias_memories():
    graph, _, target, plan = build(PLACEMENTS["mixed"])
    schedule = Schedule.from_json(json.loads(plan.schedule.dumps()))
    assert schedule.aliases == plan.schedule.aliases and schedule.aliases
    assert json.loads(plan.schedule.dumps())["aliases"][0].keys() == {"node", "memory"}
    again = MemoryPlan.loads(plan.dumps(), schedule)
    assert again.buffers == plan.buffers
    assert again.buffer("A_in1@dram").strides == (4 * 12 * ROW, 12 * ROW, ROW, 4)
    assert again.violations(target) == []


def test_verify_checks_members_against_their_owner_and_only_owners_for_alignment():
    graph, _, target, plan = build(PLACEMENTS["mixed"])
    assert plan.buffer("A_t1@dram").offset % 64 != 0 or plan.buffer("A_in1@dram").offset % 64 != 0
    assert plan.violations(target) == []            # members at unaligned offsets are fine
    misaligned = replace(plan, buffers=tuple(replace(b, offset=b.offset + 4) if b.id == "x@dram" else b
                                             for b in plan.buffers))
    assert any("'x@dram' offset" in p and "alignment" in p for p in misaligned.violations(target))
    wrong_stride = replace(plan, buffers=tuple(replace(b, strides=(4 * 24 * ROW, 24 * ROW, ROW, 4))
                                               if b.id == "A_in1@dram" else b for b in plan.buffers))
    assert any("'A_in1@dram'" in p and "outside its owner" in p for p in wrong_stride.violations(target))


def test_a_schedule_without_the_alias_memory_is_refused():
    graph, _, target, _ = build(PLACEMENTS["cpu"])
    schedule = hand_schedule(graph, target, PLACEMENTS["cpu"])
    region = next(n for n in graph if n.op_type == "Region")
    broken = replace(schedule, aliases={k: v for k, v in schedule.aliases.items() if k != region.id})
    with pytest.raises(MemoryPlanError, match="Schedule.aliases"):
        plan_memory(graph, broken, target)


def test_an_assemble_of_a_constant_is_refused():
    # (a graph input part is the caller's to write into place: tests/test_inplace_concat.py)
    t = TiledBuilder()
    c = Value("c", "float32", (1, 2, 4, 4), const=np.ones((1, 2, 4, 4), np.float32))
    z = Value("z", "float32", (1, 2, 4, 4))
    r = t.op("Relu", "r", [z], z.shape)
    y = t.assemble("y", [c, r], axis=1)
    graph = Graph.build("g", t.nodes, [z], [y], {"": 17})
    target = make_target()
    with pytest.raises(MemoryPlanError, match="constant"):
        plan_memory(graph, hand_schedule(graph, target, {}), target)


def _base_read_twice_far_apart():
    """x -> Relu (NPU, in place over x's copy) whose regions are read by a tile early and one late, with a
    big chain between, then read whole by a Softmax: the base is idle meanwhile, a spill candidate if its
    group could be split."""
    rng = np.random.default_rng(0)
    w, b = he_weights(rng, (4, 4, 3, 3)), np.zeros(4, np.float32)
    t = TiledBuilder()
    x, z = Value("x", "float32", (1, 4, 12, 10)), Value("z", "float32", (1, 4, 24, 20))
    r = t.op("Relu", "r", [x], x.shape)
    p0 = t.conv("p0", t.region("s0", r, [0, 0, 0, 0], [1, 4, 7, 10]), w, b, [1, 1, 0, 1], None)
    cur = z
    for k in range(3):
        cur = t.op("Softmax", f"sm{k}", [cur], z.shape)
    q = t.op("Softmax", "q", [r], r.shape)
    p1 = t.conv("p1", t.region("s1", r, [0, 0, 5, 0], [1, 4, 12, 10]), w, b, [0, 1, 1, 1], None)
    y = t.assemble("y", [p0, p1], 2)
    return Graph.build("g", t.nodes, [x, z], [y, cur, q], {"": 17})


def test_repairs_never_split_a_group_holding_regions():
    graph = _base_read_twice_far_apart()
    target = make_target(sram=18 * 1024)
    # q too long for any idle gap before the chain ends: the list scheduler would fill one with it
    schedule = hand_schedule(graph, target, {n.name: "npu" for n in graph}, durations={"q": 20_000})
    table = build_table(graph, schedule, target)
    lifetimes = table.lifetimes(schedule)
    storages = group_storages(table, lifetimes, resolve_aliases(table, schedule, graph.node_map()))
    pinned = _regioned(table, storages)
    assert {"x@sram", "r@sram", "s0@sram", "s1@sram"} <= pinned
    sm1 = next(t for t in schedule.tasks if t.op == "Softmax" and t.node == graph.nodes[4].id)
    at = sm1.start_ns                                  # between the two tiles: the base is idle
    idle = {c.buffer for c in spill_candidates(table, schedule, "sram", at, lifetimes, set())}
    assert "r@sram" in idle                            # it would be a candidate, were it alone
    assert not {c.buffer for c in spill_candidates(table, schedule, "sram", at, lifetimes, pinned)} & pinned
    # Planned where the memory is tight, the plan repairs elsewhere (or refuses) and stays exact
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    assert all(s.value not in {"x", "r"} for s in plan.spills)
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 4, 12, 10)).astype(np.float32),
             "z": np.random.default_rng(2).standard_normal((1, 4, 24, 20)).astype(np.float32)}
    expected = onnxruntime_outputs(to_onnx(graph), feeds)     # Region -> Slice, Assemble -> Concat
    result = simulate(emit(graph, plan, target), feeds)
    np.testing.assert_allclose(result.outputs["y"], expected[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.outputs["sm2"], expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.outputs["q"], expected[2], rtol=1e-5, atol=1e-6)


def test_bounds_check_the_last_run_of_a_strided_operand():
    graph, _, target, plan = build(PLACEMENTS["mixed"])
    bundle = emit(graph, plan, target)
    assert bounds_violations(bundle.programs, target.memories) == []
    # Every run but the last of a channel-strided region inside DRAM; the last one past its end
    small = {**target.memories, "dram": replace(target.memories["dram"], size=plan.buffer("A_in1@dram").end - 1)}
    problems = bounds_violations(bundle.programs, small)
    assert any("A_in1@dram" in p and "lies outside memory 'dram'" in p for p in problems)


def test_plans_and_schedules_written_before_regions_read_the_same():
    graph, _, target, plan = build(PLACEMENTS["cpu"])
    old_schedule = {k: v for k, v in plan.schedule.to_json().items() if k != "aliases"}
    assert Schedule.from_json(old_schedule).aliases == {}
    old_plan = plan.to_json()
    old_plan["buffers"] = [{k: v for k, v in b.items() if k != "strides"} for b in old_plan["buffers"]]
    again = MemoryPlan.from_json(old_plan, plan.schedule)
    assert all(b.strides is None for b in again.buffers)
    assert [b.offset for b in again.buffers] == [b.offset for b in plan.buffers]
