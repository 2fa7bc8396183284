"""Cascades (hetc.target.tiling.cascade): a chain of layers run band by band computes what the chain does, its
tiles read each other where they were made, and the tiler cascades where the cost model says it pays."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from hetc.ir.tiles import is_alias, region_bounds
from hetc.pipeline import BuildOptions, build
from hetc.target import load_target
from hetc.target.tiling import Untileable, cut_cascade, tile_graph
from hetc.target.tiling.cascade import CASCADE_AXIS, band_tiles, hand_cascade, plan_cascades

from tiler_helpers import aliases, assert_same_outputs, load, make_model, tiles_of

mk = helper.make_node


def _conv_pool_conv(hw: int = 20):
    """3x3 conv (pad 1) -> 2x2 max pool -> 3x3 conv (pad 1, stride 2): halos, a window of its own stride, and
    a strided window, with biases and random weights."""
    nodes = [mk("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             mk("MaxPool", ["a"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             mk("Conv", ["p", "w2", "b2"], ["y"], name="c2", pads=[1, 1, 1, 1], strides=[2, 2])]
    return load(make_model(nodes, {"x": (1, 4, hw, hw)}, ["y"],
                           {"w1": (8, 4, 3, 3), "b1": (8,), "w2": (6, 8, 3, 3), "b2": (6,)}))


@pytest.mark.parametrize("bands", [2, 3, 5])
def test_a_cascade_computes_what_the_chain_does(bands):
    graph = _conv_pool_conv()
    assert_same_outputs(graph, cut_cascade(graph, ["c1", "pool", "c2"], bands))


def test_the_layers_of_a_band_read_each_other_where_they_were_made():
    graph = _conv_pool_conv()
    tiled = cut_cascade(graph, ["c1", "pool", "c2"], 3)
    assert "a" not in tiled.values and "p" not in tiled.values   # the tensors between the layers are gone
    for first, pool, last in zip(tiles_of(tiled, "c1"), tiles_of(tiled, "pool"), tiles_of(tiled, "c2")):
        assert pool.inputs[0] is first.outputs[0] and last.inputs[0] is pool.outputs[0]
        assert {t.tile.axis for t in (first, pool, last)} == {CASCADE_AXIS}
    # only the first layer reads a Region (of x); one Assemble makes y
    assert {r.inputs[0].name for r in aliases(tiled, "Region")} == {"x"}
    assembled = aliases(tiled, "Assemble")
    assert [a.outputs[0].name for a in assembled] == ["y"]


def test_each_layer_makes_exactly_the_rows_the_next_reads():
    graph = _conv_pool_conv(hw=20)   # a: 20 rows, p: 10, y: 5
    cascade = hand_cascade([n for n in graph.nodes if n.name in ("c1", "pool", "c2")], 2, 17)
    conv1, pool, conv2 = band_tiles(cascade.layers, (2, 5))   # y rows 2-4
    # y rows 2-4 (stride 2, pad 1) read p rows 3-9 (the last row is padding); those read a rows 6-19
    assert (conv2.out[0][2], conv2.out[1][2]) == (2, 5)
    assert (pool.out[0][2], pool.out[1][2]) == (3, 10)
    assert (conv1.out[0][2], conv1.out[1][2]) == (6, 20)
    x_box = conv1.inputs[0][1]
    assert (x_box[0][2], x_box[1][2]) == (5, 20)   # one halo row above, the bottom pad below


def test_a_cascade_in_the_tiled_graph_reads_its_first_input_once_per_band():
    graph = _conv_pool_conv()
    tiled = cut_cascade(graph, ["c1", "pool", "c2"], 2)
    regions = sorted(region_bounds(r) for r in aliases(tiled, "Region"))
    assert len(regions) == 2 and all(not is_alias(t) for t in tiles_of(tiled, "pool"))


def _three_convs(hw: int = 20):
    nodes = [mk("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             mk("Conv", ["a", "w2"], ["b"], name="c2", pads=[1, 1, 1, 1]),
             mk("Conv", ["b", "w3"], ["y"], name="c3", pads=[2, 2, 2, 2], dilations=[2, 2])]
    return load(make_model(nodes, {"x": (1, 3, hw, hw)}, ["y"],
                           {"w1": (4, 3, 3, 3), "w2": (5, 4, 3, 3), "w3": (2, 5, 3, 3)}))


@pytest.mark.parametrize("bands", [2, 3, 5])
def test_carried_halo_rows_compute_what_the_chain_does(bands):
    graph = _conv_pool_conv()
    assert_same_outputs(graph, cut_cascade(graph, ["c1", "pool", "c2"], bands, carry=True))


@pytest.mark.parametrize("bands", [2, 7, 10, 20])
def test_carried_halo_rows_reach_back_over_bands_thinner_than_the_halo(bands):
    graph = _three_convs()   # the dilated last layer reads two rows above and below each of its rows
    assert_same_outputs(graph, cut_cascade(graph, ["c1", "c2", "c3"], bands, carry=True))


def test_a_chain_may_start_at_a_layer_whose_first_input_is_a_broadcast_constant():
    """paddle2onnx writes HardSwish's scale as Mul(w, x): the first layer's input 0 is a (1,) constant."""
    nodes = [mk("Mul", ["s", "x"], ["a"], name="mul"),
             mk("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = load(make_model(nodes, {"x": (1, 4, 12, 12)}, ["y"], {"s": np.array([0.7], np.float32)}))
    for carry in (False, True):
        assert_same_outputs(graph, cut_cascade(graph, ["mul", "pool"], 3, carry=carry))


def test_a_hand_cascade_refuses_more_bands_than_rows():
    graph = _conv_pool_conv()
    with pytest.raises(Untileable):
        cut_cascade(graph, ["c1", "pool", "c2"], 6)


def test_carried_bands_make_every_row_once_and_keep_the_halo():
    graph = _three_convs()
    tiled = cut_cascade(graph, ["c1", "c2", "c3"], 10, carry=True)
    for name, height in (("c1", 20), ("c2", 20)):
        rows = sum(t.outputs[0].shape[2] for t in tiles_of(tiled, name) if t.op_type == "Conv")
        assert rows == height   # no row computed twice
    joins = [t for t in tiles_of(tiled, "c2") if t.op_type == "Concat"]
    assert joins and all(is_alias(j.inputs[0].producer) for j in joins)   # kept rows: a view of the band before
    assert len(tiles_of(tiled, "c3")) == 10


# ----------------------------------------------------------------------------------------------- choice
def _pointwise_pool(channels: int = 32, hw: int = 128):
    """A 1x1 conv whose output is twice a multi-npu core's scratchpad, into a 2x2 max pool: no halo, so the
    cascade recomputes nothing and saves the whole round trip of the conv's output."""
    nodes = [mk("Conv", ["x", "w", "b"], ["a"], name="pw"),
             mk("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    return load(make_model(nodes, {"x": (1, 16, hw, hw)}, ["y"], {"w": (channels, 16, 1, 1), "b": (channels,)}))


def test_the_tiler_cascades_a_chain_where_it_pays_and_says_why():
    graph = _pointwise_pool()
    target = load_target("multi-npu")
    (cascade,) = plan_cascades(graph, target, 17, 1 / 3)
    assert [layer.node.name for layer in cascade.layers] == ["pw", "pool"]
    assert cascade.estimate_ns < cascade.separate_ns * 0.95
    tiled = tile_graph(graph, target)
    pool_tiles = tiles_of(tiled, "pool")
    assert len(pool_tiles) == cascade.bands >= 2
    assert all(t.tile.why.startswith("cascade pw -> pool") for t in pool_tiles)
    assert "a" not in tiled.values
    assert_same_outputs(graph, tiled)


def test_no_cascade_where_the_producer_has_another_reader():
    nodes = [mk("Conv", ["x", "w", "b"], ["a"], name="pw"),
             mk("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             mk("ReduceMean", ["a"], ["m"], name="mean", keepdims=1)]
    graph = load(make_model(nodes, {"x": (1, 16, 128, 128)}, ["y", "m"], {"w": (32, 16, 1, 1), "b": (32,)}))
    assert plan_cascades(graph, load_target("multi-npu"), 17, 1 / 3) == []


def test_a_cascaded_build_simulates_through_its_planned_memories_as_onnxruntime_computes():
    model = make_model([mk("Conv", ["x", "w", "b"], ["a"], name="pw"),
                        mk("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])],
                       {"x": (1, 16, 128, 128)}, ["y"], {"w": (32, 16, 1, 1), "b": (32,)})
    result = build(model, BuildOptions(target="multi-npu", validate=True, time_limit_s=5))
    assert result.validation is not None and result.validation.passed
    cascaded = [n for n in result.graph.nodes if n.tile is not None and n.tile.axis == CASCADE_AXIS]
    assert {n.tile.of for n in cascaded} == {"pw", "pool"}
    devices = {t.engine for t in result.plan.schedule.tasks if t.kind == "compute" and t.node in {n.id for n in cascaded}}
    assert devices and all(d.startswith("npu") for d in devices)
    assert np.isfinite(result.summary["makespan_us"])


def test_inspect_shows_the_cascade_before_a_build():
    from hetc.inspect import inspect_graph
    report = inspect_graph(_pointwise_pool(), load_target("multi-npu"))
    tiling = {n.name: n.tiling for n in report.nodes}
    assert tiling["pw"]["axis"] == tiling["pool"]["axis"] == CASCADE_AXIS
    assert tiling["pw"]["why"].startswith("cascade pw -> pool")


def test_the_tiler_carries_halo_rows_where_recomputing_them_costs_more():
    """An LRN into a 3x3 max pool of stride 1 on edge-soc's DSP: each band of the pool reads two rows of the
    LRN that its neighbours read too, and the LRN is bound by its own work, so the cascade carries the shared
    rows (more than NEAR_BEST faster than recomputing them); the build's functional simulation of the band
    buffers agrees with onnxruntime."""
    model = make_model([mk("LRN", ["x"], ["a"], name="lrn", size=5),
                        mk("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                       {"x": (1, 96, 110, 110)}, ["y"], {})
    graph = load(model)
    (cascade,) = plan_cascades(graph, load_target("edge-soc"), 17, 1 / 3)
    assert cascade.carry and "halo rows carried" in cascade.why
    result = build(model, BuildOptions(target="edge-soc", validate=True, time_limit_s=5))
    assert result.validation is not None and result.validation.passed
    joins = [n for n in result.graph.nodes if n.op_type == "Concat" and n.tile is not None]
    assert len(joins) == cascade.bands - 1 and all(n.tile.of == "lrn" for n in joins)


def test_an_overlapping_pool_recomputes_its_one_shared_row():
    """The same LRN into a 3x3 pool of stride 2: one row shared per band, so carrying it is not NEAR_BEST
    faster and the cascade recomputes it (fewer tasks)."""
    model = make_model([mk("LRN", ["x"], ["a"], name="lrn", size=5),
                        mk("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                           pads=[1, 1, 1, 1])],
                       {"x": (1, 96, 110, 110)}, ["y"], {})
    (cascade,) = plan_cascades(load(model), load_target("edge-soc"), 17, 1 / 3)
    assert not cascade.carry
