"""DRAM's bound after a cut (hetc.schedule.bound.dram_tail_bound): what the nodes after a node still read from
DRAM, less what the on-chip memories hold ahead, cannot stream before that node has ended."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.ir import EXPORT_IR_VERSION
from hetc.pipeline import BuildOptions, build
from hetc.schedule.api import solve
from hetc.schedule.bound import (balance_bound, bound_parts, critical_path, dram_bound, dram_tail_bound,
                                 lower_bound, release_path, series_bound, work_bound)
from hetc.schedule.problem import DmaSpec, SchedulingProblem, ValueSpec
from hetc.target import load_target, target_from_toml_text

from random_problems import random_problem


def _two_phases(onchip: int | None = 2_000, bandwidth: float | None = 1.0) -> SchedulingProblem:
    """``a`` (5000 ns, CPU or NPU, no weight) feeds ``b`` (500 ns, CPU only), which reads a 10,000-byte weight
    straight from DRAM at 1 B/ns and writes an 8-byte graph output."""
    values = (ValueSpec("x", 64, None, (0,)), ValueSpec("h", 64, 0, (1,)),
              ValueSpec("w", 10_000, None, (1,), is_const=True), ValueSpec("y", 8, 1, (), is_output=True))
    return SchedulingProblem(
        node_ids=(0, 1), node_names=("a", "b"), ops=("Relu", "Gemm"),
        durations=({"cpu": 5000, "npu": 5000}, {"cpu": 500}), node_inputs=((0,), (1, 2)), values=values,
        device_memory={"cpu": "dram", "npu": "sram"}, dmas={"dma": DmaSpec("dma", ("dram", "sram"), 0.0, 8.0)},
        sync_ns=0, priority=("npu", "cpu"), dram_bandwidth=bandwidth, onchip_bytes=onchip)


def test_the_bytes_after_a_cut_stream_after_it():
    problem = _two_phases()
    # after a (5000 ns at the earliest): 10,000 weight bytes less the 2,000 held on chip, and y's 8 bytes
    assert dram_tail_bound(problem) == 5000 + 8000 + 8
    others = (critical_path(problem), release_path(problem), work_bound(problem), balance_bound(problem),
              dram_bound(problem))
    assert max(others) < dram_tail_bound(problem) == lower_bound(problem) == max(bound_parts(problem).values())
    for strategy in ("heft", "greedy", "cpsat"):   # b streams its weight at DRAM's 1 B/ns: 5000 + 10,000
        assert lower_bound(problem) <= solve(problem, strategy, time_limit_s=1).makespan_ns, strategy


def test_more_on_chip_memory_lowers_it_and_none_known_gives_none():
    assert dram_tail_bound(_two_phases(onchip=9_000)) == 5000 + 1000 + 8
    assert dram_tail_bound(_two_phases(onchip=None)) == 0
    assert dram_tail_bound(_two_phases(bandwidth=None)) == 0


def test_the_program_over_what_precedes_a_cut_can_lift_it():
    # three independent 5000 ns nodes on two devices, joined by j (2 ns), before b: j cannot end before 7500
    values = (ValueSpec("x", 64, None, (0, 1, 2)), ValueSpec("h1", 64, 0, (3,)), ValueSpec("h2", 64, 1, (3,)),
              ValueSpec("h3", 64, 2, (3,)), ValueSpec("j", 64, 3, (4,)),
              ValueSpec("w", 10_000, None, (4,), is_const=True), ValueSpec("y", 8, 4, (), is_output=True))
    chain = SchedulingProblem(
        node_ids=(0, 1, 2, 3, 4), node_names=("a1", "a2", "a3", "j", "b"), ops=("Relu",) * 3 + ("Sum", "Gemm"),
        durations=({"cpu": 5000, "npu": 5000},) * 3 + ({"cpu": 2, "npu": 2}, {"cpu": 500}),
        node_inputs=((0,), (0,), (0,), (1, 2, 3), (4, 5)), values=values,
        device_memory={"cpu": "dram", "npu": "sram"}, dmas={"dma": DmaSpec("dma", ("dram", "sram"), 0.0, 8.0)},
        sync_ns=0, priority=("npu", "cpu"), dram_bandwidth=1.0, onchip_bytes=2_000)
    assert critical_path(chain) == 5502
    # the a's over 2 devices (7500 ns), then j after them (the stages before the cut j: 7502 ns; the program
    # over j and its ancestors alone would give (3 x 5000 + 2) / 2), then the late bytes
    assert dram_tail_bound(chain) == 7502 + 8008
    for strategy in ("heft", "cpsat"):
        assert lower_bound(chain) <= solve(chain, strategy, time_limit_s=1).makespan_ns


def test_a_cut_node_streams_after_the_stages_before_it():
    # a1 -> a2 (a chain: 200 ns on the NPU), j, four independent b's (a fan: 200 ns over both devices), k, then
    # c (the CPU only) reads a 10,000-byte weight: k cannot end before 402 ns, and 9,908 bytes stream after it
    fast, either = {"npu": 100, "cpu": 300}, {"npu": 100, "cpu": 100}
    durations = (fast, fast, {"npu": 1, "cpu": 1}, either, either, either, either, {"npu": 1, "cpu": 1},
                 {"cpu": 500})
    values = [ValueSpec("x", 64, None, (0,)), ValueSpec("h1", 64, 0, (1,)), ValueSpec("h2", 64, 1, (2,)),
              ValueSpec("j", 64, 2, (3, 4, 5, 6))]
    values += [ValueSpec(f"b{k}", 64, 3 + k, (7,)) for k in range(4)]
    values += [ValueSpec("k", 64, 7, (8,)), ValueSpec("w", 10_000, None, (8,), is_const=True),
               ValueSpec("y", 8, 8, (), is_output=True)]
    problem = SchedulingProblem(
        node_ids=tuple(range(9)), node_names=("a1", "a2", "j", "b1", "b2", "b3", "b4", "k", "c"),
        ops=("Relu",) * 7 + ("Sum", "Gemm"), durations=durations,
        node_inputs=((0,), (1,), (2,), (3,), (3,), (3,), (3,), (4, 5, 6, 7), (8, 9)), values=tuple(values),
        device_memory={"cpu": "dram", "npu": "sram"}, dmas={"dma": DmaSpec("dma", ("dram", "sram"), 0.0, 1e4)},
        sync_ns=0, priority=("npu", "cpu"), dram_bandwidth=1.0, onchip_bytes=100)
    assert series_bound(problem) == 200 + 1 + 200 + 1 + 500
    assert dram_tail_bound(problem) == 402 + 9900 + 8 == lower_bound(problem) > dram_bound(problem)
    for strategy in ("heft", "cpsat"):
        assert lower_bound(problem) <= solve(problem, strategy, time_limit_s=1).makespan_ns, strategy


@pytest.mark.parametrize("seed", range(6))
def test_never_above_any_strategy_with_room_for_every_weight(seed):
    # with on-chip room for every weight the capacity the scheduler does not enforce cannot matter
    problem = random_problem(seed, nodes=20)
    problem = replace(problem, dram_bandwidth=6.0, onchip_bytes=sum(v.nbytes for v in problem.values), _memo={})
    for strategy in ("heft", "greedy", "cpsat"):
        assert dram_tail_bound(problem) <= solve(problem, strategy, time_limit_s=1).makespan_ns, strategy


def test_a_shipped_plan_of_a_convolution_then_wide_gemms_stays_above_it():
    """A convolution, then four Gemm heads of 2 MiB of weights each on an `edge-soc` with 64 KiB scratchpads:
    the heads run side by side, but their 8 MiB cannot stream ahead of the convolution, and the tail bound
    decides (the critical path has one head, DRAM's whole-run bound the convolution's time overlapped)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((64, 16, 3, 3)) / 12).astype(np.float32), "cw")]
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"])]
    outputs = []
    for head in range(4):
        weight = (rng.standard_normal((64 * 32 * 32, 8)) / 256).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"gw{head}"))
        nodes.append(helper.make_node("Gemm", ["f", f"gw{head}"], [f"y{head}"]))
        outputs.append(helper.make_tensor_value_info(f"y{head}", TensorProto.FLOAT, [1, 8]))
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    source = load_target("edge-soc").source
    small = target_from_toml_text(source.replace('size = "8MiB"', 'size = "64KiB"')
                                  .replace('size = "4MiB"', 'size = "64KiB"'), "small")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build(model, BuildOptions(target=small, scheduler="heft"))
    shipped = result.schedule
    assert shipped.lower_bound_ns <= shipped.makespan_ns
    parts = shipped.stats.details["bound_parts_ns"]
    assert max(parts, key=parts.get) == "DRAM after a cut" and parts["DRAM after a cut"] == shipped.lower_bound_ns
    assert parts["DRAM after a cut"] > max(parts["DRAM"], parts["critical path with transfers"]) + 20_000
    (line,) = [line for line in result.bundle.report.splitlines() if line.startswith("lower bound from")]
    assert line.split("from", 1)[1].strip().startswith("DRAM after a cut ")   # the report names what decides
