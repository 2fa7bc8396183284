"""Predicated experts (hetc.ir.predicates, hetc.passes.predication): a router's unchosen experts, their weight
copies included, are skipped at run time; the schedule keeps their worst case; outputs stay onnxruntime's."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from hetc.api import BuildOptions, build
from hetc.codegen.program import Compute, Dma, instruction_from_json
from hetc.frontend import import_model
from hetc.ir.predicates import shared_gate, zero_fills
from hetc.passes import optimize
from hetc.sim import simulate
from qdq_helpers import make_models


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
    router = {"Softmax", "TopK", "OneHot", "ReduceSum", "Div", "Split"}
    assert all(n.when is None for n in graph.nodes if n.op_type in router)


def test_a_gate_no_router_computes_predicates_nothing():
    """A dense mixture (the experts summed, no TopK) and a Mul by an input column are not routing."""
    assert all(n.when is None for n in _graph(_moe(experts=2, top_k=None)).nodes)


def test_a_batch_that_uses_every_expert_stays_dense():
    """Top-2 of 8: one token leaves an expert out with probability 0.75, sixteen with 0.01; predication would
    only delay the weights behind the router, so the rule wants at least MIN_SKIP_CHANCE."""
    from hetc.passes.predication import MIN_SKIP_CHANCE, skip_chance

    one, batch = _graph(_moe(tokens=1)), _graph(_moe(tokens=16))
    topk = next(n for n in one.nodes if n.op_type == "TopK")
    gate = next(n.when for n in one.nodes if n.when is not None)
    assert skip_chance(topk, gate) == pytest.approx(0.75)
    assert all(n.when is None for n in batch.nodes)
    topk16 = next(n for n in batch.nodes if n.op_type == "TopK")
    column = next(v for n in batch.nodes if n.op_type == "Split" for v in n.outputs)
    assert skip_chance(topk16, column) == pytest.approx(0.75 ** 16)
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
    assert {c.value for c in copies} >= {"mm_w_1", "mm_w_2"}   # the expert weights wait for the router
    for ins in computes + copies:
        assert instruction_from_json(ins.to_json()) == ins
        assert ins.when.memory == (ins.dst.memory if isinstance(ins, Dma) else ins.outputs[0].memory)
        assert " if %" in ins.asm()


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
