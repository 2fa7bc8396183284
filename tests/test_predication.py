"""Predicated experts (hetc.ir.predicates, hetc.passes.predication): a router's unchosen experts, their weight
copies included, are skipped at run time; the schedule keeps their worst case; outputs stay onnxruntime's."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from hetc.api import BuildOptions, build
from hetc.codegen.program import Compute, Dma, Wait, instruction_from_json
from hetc.frontend import import_model
from hetc.ir.predicates import shared_gate, zero_fills
from hetc.passes import optimize
from hetc.sim import simulate
from qdq_helpers import make_models, tool


def _moe(tokens: int = 1, experts: int = 8, top_k: int | None = 2) -> onnx.ModelProto:
    return make_models().moe(tokens, experts, top_k, name=f"moe{experts}")


def _graph(model: onnx.ModelProto):
    return optimize(import_model(model))


def test_each_expert_is_gated_with_its_cone_and_nothing_else():
    graph = _graph(_moe(experts=4))
    predicated = [n for n in graph.nodes if n.when is not None]
    gates = {n.when.name for n in predicated}
    assert len(gates) == 4   # one gate column per expert
    for gate in gates:
        members = [n for n in predicated if n.when.name == gate]
        # the expert's two projections: the second multiplies by the gate (a zero fill when off), the first
        # feeds only it
        assert sorted(zero_fills(n) for n in members) == [False, True]
    router = {"TopKGate", "Split"}   # (the router fused whole: hetc.passes.router)
    assert all(n.when is None for n in graph.nodes if n.op_type in router)


def test_a_gate_no_router_computes_predicates_nothing():
    """A dense mixture (the experts summed, no TopK) and a Mul by an input column are not routing."""
    assert all(n.when is None for n in _graph(_moe(experts=2, top_k=None)).nodes)


def test_a_batch_that_uses_every_expert_stays_dense():
    """Top-2 of 8: one token leaves an expert out with probability 0.75, sixteen with 0.01; predication would
    only delay the weights behind the router, so the rule wants at least MIN_SKIP_CHANCE."""
    from hetc.ir.predicates import skip_chance
    from hetc.passes.predication import MIN_SKIP_CHANCE

    one, batch = _graph(_moe(tokens=1)), _graph(_moe(tokens=16))
    gate = next(n.when for n in one.nodes if n.when is not None)
    assert skip_chance(gate) == pytest.approx(0.75)
    assert all(n.when is None for n in batch.nodes)
    column = next(v for n in batch.nodes if n.op_type == "Split" for v in n.outputs)
    assert skip_chance(column) == pytest.approx(0.75 ** 16)
    assert 0.75 ** 16 < MIN_SKIP_CHANCE <= 0.75


def test_shared_gate_needs_every_reader_to_agree():
    assert shared_gate(["g", "g"], "w") == "g"
    assert shared_gate(["g", None], "w") is None
    assert shared_gate(["g", "h"], "w") is None
    assert shared_gate([], "w") is None
    assert shared_gate(["g"], "g") is None   # the gate's own copy is what the readers decide by


@pytest.fixture(scope="module")
def moe_build():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # a tiny model leaves accelerators idle
        return build(_moe(), BuildOptions(target="edge-soc", validate=True))


def test_predicated_instructions_are_emitted_and_round_trip(moe_build):
    instructions = [i for p in moe_build.bundle.programs.values() for i in p.instructions]
    computes = [i for i in instructions if isinstance(i, Compute) and i.when is not None]
    copies = [i for i in instructions if isinstance(i, Dma) and i.when is not None]
    assert len(computes) == 16 and sum(i.zero_fill for i in computes) == 8
    # the expert weights (each with its bias as its last row) wait for the router
    assert {c.value for c in copies} >= {"mm_w_1_and_bias", "mm_w_2_and_bias"}
    for ins in computes + copies:
        assert instruction_from_json(ins.to_json()) == ins
        assert ins.when.memory == (ins.dst.memory if isinstance(ins, Dma) else ins.outputs[0].memory)
        assert " if %" in ins.asm()


def test_a_predicated_copy_reads_its_gate_through_the_memory_plan(moe_build):
    """The gate a copy reads where it writes is bound like any read: its buffer lives until the copy, a
    writer reusing its bytes waits for the copy, and a spill of the gate rebinds the copy to the reloaded
    buffer (test_tiled_experts_stay_predicated_and_exact spills gates)."""
    plan = moe_build.bundle.memory_plan()
    copies = [i for p in moe_build.bundle.programs.values() for i in p.instructions
              if isinstance(i, Dma) and i.when is not None]
    assert copies
    for copy in copies:
        gate = plan.buffer(plan.task_buffers[copy.task].reads[1])
        assert copy.when.buffer == gate.id and gate.start_ns <= copy.planned_start_ns < gate.end_ns


def test_a_skipped_task_waits_for_its_gate_alone(moe_build):
    """A predicated task's waits for its inputs and for room are predicated too: right before it, after its
    plain waits, skipped with it. With one expert's predicated waits gone, every task still waits for what it
    must (the orderings test_codegen derives by brute force), but for that expert's tasks, which still wait
    for the writers of their gate's bytes and, zero-filling, for the earlier users of their outputs' bytes."""
    from dataclasses import replace
    from test_codegen import happens_before, required_orderings
    import networkx as nx

    bundle, plan = moe_build.bundle, moe_build.plan
    predicated_waits = 0
    for program in bundle.programs.values():
        run = []
        for ins in program.instructions:
            if isinstance(ins, Wait):
                run.append(ins)
                continue
            if run and any(w.when is not None for w in run):
                assert ins.when is not None and all(w.when == ins.when for w in run if w.when is not None)
                firsts = [w.when is None for w in run]
                assert firsts == sorted(firsts, reverse=True)   # plain waits first
                predicated_waits += sum(not f for f in firsts)
            run = []
    assert predicated_waits > 0
    roots = {b.id: (plan.buffer(b.alias_of) if b.alias_of else b).id for b in plan.buffers}
    writes = {tid: {roots[b] for b in tb.writes} for tid, tb in plan.task_buffers.items()}
    required = required_orderings(plan)
    schedule = plan.schedule
    data = {(d, t.id) for t in schedule.tasks for d in t.deps}
    reuse = required_orderings(replace(plan, schedule=replace(schedule, tasks=tuple(
        replace(t, deps=()) for t in schedule.tasks))))   # the byte reuses alone, by brute force
    moves = {i.task: i for p in bundle.programs.values() for i in p.instructions if isinstance(i, (Compute, Dma))}
    for gate in sorted({i.when.value for i in moves.values() if i.when is not None}):
        off = {t for t, i in moves.items() if i.when is not None and i.when.value == gate}
        skipped = replace(bundle, programs={e: replace(p, instructions=tuple(
            i for i in p.instructions if not (isinstance(i, Wait) and i.when is not None and i.when.value == gate)))
            for e, p in bundle.programs.items()})
        order, where = happens_before(skipped)
        for a, b in required:
            if b in off and not writes.get(a, set()) & {moves[b].when.storage}:
                if not (isinstance(moves[b], Compute) and moves[b].zero_fill):
                    continue   # skipped, it moves and reads nothing
                if (a, b) in data and (a, b) not in reuse and not writes.get(a, set()) & {
                        o.storage for o in moves[b].outputs}:
                    continue   # writing zeros, it reads no input
            assert nx.has_path(order, where[a], where[b]), f"{a} -> {b} unordered with gate {gate} off"


def test_unchosen_experts_are_skipped_and_outputs_stay_exact(moe_build):
    result = moe_build
    assert result.validation.passed
    stats = result.sim.stats
    # top-2 of 8: six experts off, each two computes and their weight and bias copies
    assert stats["skipped"] >= 6 * 2
    assert result.sim.makespan_ns < stats["worst_case_makespan_ns"]
    timing_only = simulate(result.bundle, functional=False)
    assert timing_only.makespan_ns == stats["worst_case_makespan_ns"]   # no data: every gate on


def test_ties_route_to_the_lowest_experts_as_onnxruntime_does(moe_build):
    """x = 0: equal logits, so TopK takes experts 0 and 1 (ties by ascending index) and the other six are
    skipped; the output is onnxruntime's."""
    import onnxruntime as ort

    x = np.zeros((1, 64), np.float32)
    out = simulate(moe_build.bundle, {"x": x})
    assert out.stats["gates_off"] == [f"split_out_{k}" for k in range(2, 8)]
    session = ort.InferenceSession(_moe().SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(out.outputs["y"], session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_experts_never_wait_for_each_others_bytes(moe_build):
    """The planner keeps different experts' buffers apart (BufferTable._apart), so no reuse of bytes makes one
    expert's task wait for another's: a skipped expert would otherwise wait for a chosen one's real work."""
    from dataclasses import replace
    from test_codegen import required_orderings

    plan = moe_build.plan
    tasks = {t.id: t for t in plan.schedule.tasks}
    waits = required_orderings(replace(plan, schedule=replace(plan.schedule, tasks=tuple(
        replace(t, deps=()) for t in plan.schedule.tasks))))   # every byte reuse, by brute force
    assert waits
    crossing = [(b, a) for b, a in waits if tasks[a].when and tasks[b].when and tasks[a].when != tasks[b].when]
    assert crossing == []


def test_a_predicated_writer_waits_for_the_users_of_the_bytes_it_takes_over_without_its_data_deps(moe_build):
    from test_memory_planner import _assert_reuse_deps
    assert any(t.when for t in moe_build.plan.schedule.tasks if t.id in moe_build.plan.reuse_deps)
    _assert_reuse_deps(moe_build.plan)


def test_experts_share_bytes_when_they_would_not_fit_apart(moe_build):
    from hetc.memory.lifetimes import build_table

    table = build_table(moe_build.graph, moe_build.plan.schedule, moe_build.target)
    apart = table.lifetimes(moe_build.plan.schedule)
    table.apart_budget = {}
    packed = table.lifetimes(moe_build.plan.schedule)
    gated = {t.id for t in moe_build.plan.schedule.tasks if t.when}
    moved = [b for b, spec in table.buffers.items() if spec.writer in gated and apart[b] != packed[b]]
    assert moved and all(apart[b][0] <= packed[b][0] and apart[b][1] >= packed[b][1] for b in moved)


def test_tiled_experts_stay_predicated_and_exact():
    """With 16 KiB scratchpads every expert's projections are cut into tiles: each tile keeps its expert's
    gate (a tile of the gated node multiplies by its rows of it, so it zero-fills), and the output stays
    onnxruntime's."""
    from hetc.target import load_target
    from hetc.target.loader import target_from_toml_text

    text = load_target("edge-soc").source
    small = target_from_toml_text(text.replace('size = "8MiB"', 'size = "16KiB"', 1)
                                  .replace('size = "4MiB"', 'size = "16KiB"', 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build(_moe(), BuildOptions(target=small, validate=True, scheduler="heft"))
    tiles = [n for n in result.graph.nodes if n.tile is not None]
    assert tiles and all(n.when is not None for n in tiles if n.op_type == "MatMul")
    assert result.validation.passed
    assert len(result.sim.stats["gates_off"]) == 6


def test_inspect_names_each_experts_gate():
    from hetc.inspect import inspect_graph
    from hetc.target import load_target

    report = inspect_graph(_graph(_moe()), load_target("edge-soc")).to_json()
    gated = {n["name"]: n["when"] for n in report["nodes"] if "when" in n}
    assert len(gated) == 16 and len(set(gated.values())) == 8


def test_hetc_simulate_reports_the_gates_and_the_worst_case(moe_build, tmp_path, capsys, monkeypatch):
    import json

    from test_cli import run

    moe_build.bundle.save(tmp_path / "moe")
    code, out, _ = run(capsys, monkeypatch, "simulate", str(tmp_path / "moe"), "--json")
    stats = json.loads(out)
    assert code == 0 and len(stats["gates_off"]) == 6
    assert stats["simulated_makespan_us"] < stats["worst_case_makespan_us"]
    code, out, _ = run(capsys, monkeypatch, "simulate", str(tmp_path / "moe"), "--timing-only", "--json")
    timing = json.loads(out)
    assert timing["simulated_makespan_us"] == timing["worst_case_makespan_us"] and timing["gates_off"] == []


def test_the_race_detector_sees_the_gate_reads(moe_build):
    from hetc.sim.machine import moves_data, operand_accesses

    for program in moe_build.bundle.programs.values():
        for ins in program.instructions:
            if moves_data(ins) and ins.when is not None:
                assert (ins.when, False) in operand_accesses(ins)


def test_an_index_output_is_exempt_from_dtypes_but_not_from_host_memory():
    """TopK's int64 indices do not stop the DSP (an index is an address), but a host-valued one still does."""
    from hetc.ir import Node, Value, parse_host_type
    from hetc.target import load_target

    target = load_target("edge-soc")
    scores, k = Value("p", "float32", (1, 8)), Value("k", "int64", (1,), const=np.array([2], np.int64))
    plain = Node(0, "TopK", "topk", [scores, k], [Value("v", "float32", (1, 2)), Value("i", "int64", (1, 2))])
    assert target.supports(plain, "dsp")
    hosted = Node(1, "TopK", "topk", [scores, k],
                  [Value("v", "float32", (1, 2)), Value("j", "int64", (), host=parse_host_type("seq(tensor(int64))"))])
    assert not target.supports(hosted, "dsp") and "host" in str(target.supports(hosted, "dsp"))


def test_a_build_without_simulation_says_its_makespan_is_the_worst_case(moe_build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build(_moe(), BuildOptions(target="edge-soc", scheduler="heft"))
    predicated = sum(t.when is not None for t in result.schedule.tasks)
    assert predicated > 0 and result.summary["predicated"] == {"predicated_tasks": predicated}
    assert "worst case (every gate on)" in result.bundle.report
    assert moe_build.summary["predicated"]["worst_case_us"] >= moe_build.summary["predicated"]["expected_us"]


def test_a_predicated_wait_orders_nothing_after_its_task():
    """b1 waits for a1 only when it runs (predicated), so b2 after it on the same engine, which needs a1
    whatever happened to b1, waits for a1 itself; b1's plain wait for its gate's writer c1 does order b2."""
    from hetc.codegen.sync import plan_sync
    from hetc.schedule.artifact import Task

    a1, c1 = Task(0, "compute", "A", 0, 10), Task(1, "transfer", "C", 0, 5)
    b1, b2 = Task(2, "compute", "B", 10, 20, deps=(0, 1)), Task(3, "compute", "B", 20, 30, deps=(0, 1))
    sync = plan_sync({"A": [a1], "B": [b1, b2], "C": [c1]}, {2: {0, 1}, 3: {0, 1}}, skippable={2: {0}})
    assert sync.waits[2] == [("sem.C", 1)] and sync.skipped_with[2] == [("sem.A", 1)]
    assert sync.waits[3] == [("sem.A", 1)] and 3 not in sync.skipped_with
    plain = plan_sync({"A": [a1], "B": [b1, b2], "C": [c1]}, {2: {0, 1}, 3: {0, 1}})
    assert plain.waits[2] == [("sem.A", 1), ("sem.C", 1)] and 3 not in plain.waits and not plain.skipped_with


def test_the_build_reports_every_uniform_routing_beside_its_input_draws(moe_build):
    """Besides its 8 input draws, a one-token top-2 of 8 build times each of the router's 28 choices without
    data (``simulate(..., gates_off=)``): the runs the scheduler weighed, each of them shorter than the worst
    case, which is the run with no gate off."""
    predicated = moe_build.summary["predicated"]
    assert predicated["routings"] == 28
    gates = sorted({n.when.name for n in moe_build.graph.nodes if n.when is not None})
    assert len(gates) == 8
    worst = simulate(moe_build.bundle, functional=False).makespan_ns
    assert simulate(moe_build.bundle, functional=False, gates_off=set()).makespan_ns == worst
    two_on = simulate(moe_build.bundle, functional=False, gates_off=set(gates[2:]))
    assert two_on.makespan_ns < worst and two_on.stats["skipped"] >= 6 * 2
    assert sorted(two_on.stats["gates_off"]) == gates[2:]
    assert predicated["uniform_us"] < predicated["worst_case_us"]
    assert abs(predicated["uniform_us"] - predicated["expected_us"]) < 0.2 * predicated["expected_us"]


def test_the_moe_bound_is_below_every_routing_the_build_runs(moe_build):
    """``tools/bench_moe.py``'s lower bound (the router, the chosen experts' bytes at DRAM's bandwidth, the
    fastest expert node and the Sum) is below each of the router's 28 choices as simulated, and above the
    bytes alone."""
    bound = tool("bench_moe").routed_bound_ns(moe_build, 1, 8, 2, d_model=64, hidden=128)
    bytes_alone = 2 * 4 * (64 * 128 + 128 + 128 * 64 + 64) / 20.0   # edge-soc's DRAM: 20 bytes per ns
    assert bytes_alone < bound <= moe_build.summary["predicated"]["uniform_min_us"] * 1000
