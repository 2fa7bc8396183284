"""tile_graph: which nodes it cuts, that every tile fits its budget, that the tiled graph computes the same, the
refusal capability gives for what cannot be tiled, multi-core splits, and the build option."""
from __future__ import annotations

import dataclasses

import pytest
from onnx import helper

from hetc.inspect import inspect_graph
from hetc.ir.tiles import is_alias
from hetc.pipeline import BuildOptions
from hetc.target import load_target, target_from_toml_text, working_set_bytes
from hetc.target.tiling import TILE_BUDGET_FRACTION, TilePlan, plan_node, tile_graph, tiling_rows
from hetc.target.tiling import plan as tiling_plan

from tiler_helpers import assert_same_outputs, load, make_model, tiles_of

mk = helper.make_node


def target_text(cores: int = 1, spm: str = "64KiB", dsp: str | None = None) -> str:
    """A CPU and ``cores`` identical NPU cores (Conv, Relu, Add, MaxPool, Gemm, Softmax), each with its own
    scratchpad, and optionally a DSP running Relu/Add/Softmax."""
    text = ['name = "tiles"', 'description = "tiling test"', "sync_ns = 500",
            'priority = [' + ", ".join(f'"npu{i}"' for i in range(cores)) + ', "cpu"]',
            '[memories.dram]\nkind = "dram"\nsize = "1GiB"\nbandwidth = 10.0',
            '[devices.cpu]\nkind = "cpu"\nmemory = "dram"\nlaunch_ns = 5000\npeak = { float32 = 20.0 }\n'
            'efficiency = { default = 0.5 }']
    for i in range(cores):
        text.append(f'[memories.spm{i}]\nsize = "{spm}"\nbandwidth = 100.0')
        text.append(f'[devices.npu{i}]\nkind = "npu"\nmemory = "spm{i}"\nlaunch_ns = 1000\n'
                    'peak = { float32 = 200.0 }\nefficiency = { default = 0.5 }\n'
                    'ops = ["Conv", "Relu", "Add", "MaxPool", "Gemm", "Softmax"]\ndtypes = ["float32"]')
        text.append(f'[[dma]]\nname = "dma{i}"\nmemories = ["dram", "spm{i}"]\nbandwidth = 8.0\nlatency_ns = 500')
    if dsp:
        text.append(f'[memories.tcm]\nsize = "{dsp}"\nbandwidth = 50.0')
        text.append('[devices.dsp]\nkind = "dsp"\nmemory = "tcm"\nlaunch_ns = 1000\npeak = { float32 = 50.0 }\n'
                    'efficiency = { default = 0.5 }\nops = ["Relu", "Add", "Softmax"]\ndtypes = ["float32"]')
        text.append('[[dma]]\nname = "dma_dsp"\nmemories = ["dram", "tcm"]\nbandwidth = 8.0\nlatency_ns = 500')
    return "\n\n".join(text) + "\n"


def conv_chain():
    model = make_model([mk("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
                        mk("Relu", ["c1"], ["r1"], name="relu1"),
                        mk("MaxPool", ["r1"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
                        mk("Conv", ["p", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
                        mk("Add", ["c2", "c2"], ["y"], name="add")],
                       {"x": (1, 8, 48, 48)}, ["y"],
                       {"w1": (32, 8, 3, 3), "b1": (32,), "w2": (64, 32, 3, 3), "b2": (64,)})
    return load(model)


def accelerators(target):
    return [d for d, dev in target.devices.items() if dev.kind != "cpu"]


def test_every_tile_fits_and_nothing_is_refused_for_its_size_only():
    target = target_from_toml_text(target_text())
    graph = conv_chain()
    tiled = tile_graph(graph, target)
    budget = 64 * 1024 * TILE_BUDGET_FRACTION
    tiles = [n for n in tiled.nodes if n.tile is not None]
    assert {n.tile.of for n in tiles} >= {"conv1", "pool", "conv2"}
    for n in tiles:
        assert working_set_bytes(n, 64) <= budget, n
        assert n.tile.why and 0 <= n.tile.index < n.tile.count
    for n in tiled.nodes:
        if is_alias(n):
            continue
        verdicts = [target.supports(n, d) for d in accelerators(target)]
        assert any(verdicts) or all(v.code != "working-set" for v in verdicts), [str(v) for v in verdicts]
    assert [v.name for v in tiled.outputs] == ["y"]
    assert_same_outputs(graph, tiled)
    rows = tiling_rows(tiled)
    assert {r["node"] for r in rows} == {n.tile.of for n in tiles} and all(r["why"] for r in rows)


def test_budget_is_the_smallest_home_of_the_accelerators_that_can_run_the_node():
    # 800 KB of Relu (in and out): fits neither the NPU's 512 KiB nor the DSP's 256 KiB; cut for the DSP's budget
    target = target_from_toml_text(target_text(spm="512KiB", dsp="256KiB"))
    graph = load(make_model([mk("Relu", ["x"], ["y"], name="relu")], {"x": (1, 16, 80, 80)}, ["y"], {}))
    plan = plan_node(target, graph.nodes[0])
    assert isinstance(plan, TilePlan) and plan.budget == int(256 * 1024 * TILE_BUDGET_FRACTION)
    tiled = tile_graph(graph, target)
    assert all(working_set_bytes(t, 64) <= plan.budget for t in tiles_of(tiled, "relu"))
    assert_same_outputs(graph, tiled)
    # Conv runs on the NPU only: its budget is a share of the NPU's scratchpad
    conv = conv_chain().nodes[0]
    assert plan_node(target, conv) is None   # fits the NPU whole; the DSP has no Conv


def test_a_node_that_cannot_be_tiled_keeps_a_reason_naming_what_cannot_be_tiled():
    target = target_from_toml_text(target_text())
    # Softmax over the only axis of a 1-D tensor: nothing is free to cut along
    graph = load(make_model([mk("Softmax", ["x"], ["y"], name="softmax", axis=0)], {"x": (40000,)}, ["y"], {}))
    tiled = tile_graph(graph, target)
    assert [n.op_type for n in tiled.nodes] == ["Softmax"]
    reason = target.supports(tiled.nodes[0], "npu0")
    assert reason.code == "working-set"
    assert "cannot be tiled" in str(reason) and "no axis to cut along" in str(reason)


def test_the_cap_leaves_a_node_whole_with_its_reason(monkeypatch):
    target = target_from_toml_text(target_text())
    graph = conv_chain()
    monkeypatch.setattr(tiling_plan, "MAX_TILES", 2)
    reason = target.supports(graph.nodes[0], "npu0")
    assert "more than 2 tiles (the cap per node)" in str(reason)
    assert not any(n.tile for n in tile_graph(graph, target).nodes if n.name == "conv1")


def test_an_untiled_graph_says_how_the_tiler_would_cut_it():
    target = target_from_toml_text(target_text())
    reason = target.supports(conv_chain().nodes[0], "npu0")
    assert reason.code == "working-set" and "tiling would cut it into" in str(reason)


def _parts_of_a_conv_that_fits(target, rows: int) -> TilePlan:
    """The parts the tiler makes of a 3x3 Conv (32 -> 64 channels, ``rows`` x ``rows``) that fits whole on npu0,
    checked to compute the same as the Conv; a Relu beside it stays whole (launches outweigh it)."""
    model = make_model([mk("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
                        mk("Relu", ["x"], ["z"], name="relu")],
                       {"x": (1, 32, rows, rows)}, ["y", "z"], {"w": (64, 32, 3, 3), "b": (64,)})
    graph = load(model)
    conv = next(n for n in graph.nodes if n.name == "conv")
    assert target.supports(conv, "npu0")   # fits whole
    plan = plan_node(target, conv)
    assert isinstance(plan, TilePlan)
    assert plan_node(target, next(n for n in graph.nodes if n.name == "relu")) is None
    tiled = tile_graph(graph, target)
    assert len(tiles_of(tiled, "conv")) == plan.count
    assert_same_outputs(graph, tiled)
    return plan


def test_several_cores_split_a_node_that_fits_whole_when_that_pays():
    plan = _parts_of_a_conv_that_fits(target_from_toml_text(target_text(cores=4, spm="2MiB")), rows=28)
    assert plan.count >= 4 and plan.whole_ns is not None
    assert plan.estimate_ns < plan.whole_ns and "split across 4 npu cores" in plan.why


def test_a_split_takes_one_part_per_core_where_more_would_only_overlap_weight_copies():
    # The GPT decoder's projections on multi-npu (128 x 384 fp32 weights): eight parts, two per core, were
    # estimated faster only because each core's second part loads its weight slice while the first computes.
    # A node that fits whole has its weights loaded ahead, and the second part costs a 2 µs launch.
    target = load_target("multi-npu")
    graph = load(make_model([mk("MatMul", ["x", "w"], ["y"], name="mm")], {"x": (1, 8, 128)}, ["y"],
                            {"w": (128, 384)}))
    plan = plan_node(target, graph.nodes[0])
    assert isinstance(plan, TilePlan) and plan.count == 4 and plan.axis_label == "N"
    assert plan.estimate_ns < plan.whole_ns and "split across 4 npu cores" in plan.why
    assert_same_outputs(graph, tile_graph(graph, target))


def test_several_cores_split_along_two_axes_when_no_one_axis_cut_fits_the_tile_budget():
    # ResNet-50's res4 1x1 convolutions on multi-npu: 2 MiB fits the node whole, but every channel band reads
    # the whole 784 KiB input and every row band the whole 1 MiB of weights, over the 683 KiB tile budget (a
    # third of the scratchpad). The node used to stay whole on one core (1.28 ms, against 0.34 ms split).
    target = load_target("multi-npu")
    graph = load(make_model([mk("Conv", ["x", "w", "b"], ["y"], name="conv")],
                            {"x": (1, 1024, 14, 14)}, ["y"], {"w": (256, 1024, 1, 1), "b": (256,)}))
    conv = graph.nodes[0]
    assert target.supports(conv, "npu0")   # fits whole
    plan = plan_node(target, conv)
    assert isinstance(plan, TilePlan) and len(plan.cuts) == 2 and plan.count >= 4
    assert "split across 4 npu cores" in plan.why and plan.estimate_ns < plan.whole_ns / 3
    assert_same_outputs(graph, tile_graph(graph, target))


def test_one_core_and_a_slow_cpu_do_not_split_a_node_that_fits():
    target = target_from_toml_text(target_text(cores=1, spm="2MiB"))   # the CPU is 10x slower than the NPU
    graph = load(make_model([mk("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                            {"x": (1, 32, 28, 28)}, ["y"], {"w": (64, 32, 3, 3), "b": (64,)}))
    assert [n.name for n in tile_graph(graph, target).nodes] == ["conv"]


def test_a_node_that_fits_is_spread_over_unlike_devices_when_that_pays():
    # One NPU and a CPU half as fast: a third of the convolution's parts on the CPU beats the NPU alone, even
    # with the input and output staged through DRAM for the parts.
    text = target_text(cores=1, spm="2MiB").replace("peak = { float32 = 20.0 }", "peak = { float32 = 100.0 }")
    plan = _parts_of_a_conv_that_fits(target_from_toml_text(text), rows=56)
    assert plan.estimate_ns < plan.whole_ns
    assert "split over npu0, cpu" in plan.why and "staged through DRAM" in plan.why


def test_inputs_already_off_the_cores_cost_a_spread_nothing_more():
    # The Llama prefill's gated up-projection on edge-soc (MatMul+Mul): its two activations made on chip
    # would cross DRAM once more for parts spread over the NPU, DSP and CPU, and the NPU alone wins. Read from
    # DRAM either way (graph inputs here; in the model, the cut SiLU projection's output), they cost the parts
    # nothing the whole node does not pay: spread, the node was 101.8 µs on the NPU while the others idled.
    target = load_target("edge-soc")
    gated = [mk("MatMul", ["a", "w"], ["m"], name="mm"), mk("Mul", ["m", "b"], ["y"], name="gate")]
    shapes = {"x": (1, 128, 128), "g": (1, 128, 384)}
    in_dram = load(make_model(gated, {"a": shapes["x"], "b": shapes["g"]}, ["y"], {"w": (128, 384)}))
    plan = plan_node(target, in_dram.nodes[-1])
    assert isinstance(plan, TilePlan) and "split over npu, dsp, cpu" in plan.why
    assert_same_outputs(in_dram, tile_graph(in_dram, target))
    on_chip = load(make_model([mk("Relu", ["x"], ["a"], name="relu"), mk("Sigmoid", ["g"], ["b"], name="sig"),
                               *gated], shapes, ["y"], {"w": (128, 384)}))
    assert plan_node(target, on_chip.nodes[-1]) is None


def test_an_input_a_cut_node_made_counts_as_joined_as_a_graph_input_does():
    # A chain of three gated projections on edge-soc: the first reads a graph input and is spread; the second
    # is spread only because its input, the first's output, is joined off the cores; the third then reads its
    # input from where the second's parts are joined. Its plan must be the one it gets reading a graph input,
    # however the plans are asked for (the look-back plans the producers it needs with their own inputs).
    target = load_target("edge-soc")
    chain = [mk("MatMul", ["x", "w0"], ["h"], name="first"),
             mk("MatMul", ["h", "w1"], ["m"], name="second"), mk("Mul", ["m", "g"], ["q"], name="gate1"),
             mk("MatMul", ["q", "w2"], ["n"], name="third"), mk("Mul", ["n", "g2"], ["y"], name="gate2")]
    inputs = {"x": (1, 128, 384), "g": (1, 128, 384), "g2": (1, 128, 128)}
    weights = {"w0": (384, 128), "w1": (128, 384), "w2": (384, 128)}
    alone = load(make_model(chain[3:], {"q": (1, 128, 384), "g2": (1, 128, 128)}, ["y"], {"w2": (384, 128)}))
    expected = plan_node(target, alone.nodes[0])
    assert isinstance(expected, TilePlan)
    cold = load(make_model(chain, inputs, ["y"], weights))
    assert plan_node(target, cold.nodes[-1]) == expected        # asked first: the look-back plans the rest
    in_order = load(make_model(chain, inputs, ["y"], weights))
    tiled = tile_graph(in_order, target)
    assert all(isinstance(plan_node(target, n), TilePlan) for n in in_order.nodes)
    assert plan_node(target, in_order.nodes[-1]) == expected
    assert_same_outputs(in_order, tiled)


def test_gemm_too_big_for_its_weights_streams_them_through_a_k_chain():
    target = target_from_toml_text(target_text())
    graph = load(make_model([mk("Gemm", ["a", "w", "b"], ["y"], name="fc", transB=1)],
                            {"a": (1, 2048)}, ["y"], {"w": (64, 2048), "b": (64,)}))
    tiled = tile_graph(graph, target)
    tiles = tiles_of(tiled, "fc")
    assert tiles and all(working_set_bytes(t, 64) <= 32 * 1024 for t in tiles)
    assert_same_outputs(graph, tiled, rtol=1e-5)


def test_inspect_shows_the_tiling_of_each_node_it_would_cut():
    target = target_from_toml_text(target_text())
    report = inspect_graph(conv_chain(), target)
    tiled = {n.name: n.tiling for n in report.nodes if n.tiling is not None}
    assert "conv1" in tiled and tiled["conv1"]["tiles"] > 1 and "tile budget" in tiled["conv1"]["why"]
    assert report.to_json()["nodes"][0]["tiling"] == tiled.get(report.nodes[0].name)


def test_build_options_tile_by_default():
    assert BuildOptions().tiling is True
    assert {f.name for f in dataclasses.fields(BuildOptions)} >= {"tiling"}


@pytest.mark.parametrize("flag", ["--tiling", "--no-tiling"])
def test_cli_build_takes_the_tiling_flag(tmp_path, flag):
    from cli_subprocess import REPO, run_hetc
    out = tmp_path / "bundle"
    done = run_hetc("build", REPO / "models" / "tiny_cnn.onnx", "-o", out, "-s", "greedy", "-q", flag)
    assert done.returncode == 0, done.stderr
    assert (out / "placement.csv").read_text().splitlines()[0].endswith("tile,tiling")


def test_regions_are_taken_of_values_in_dram():
    """A tiled node reading a value a whole node made (in that core's scratchpad) reads Regions of a one-part
    Assemble of it, the value written to DRAM once: the base never stays in a scratchpad beside the tiles."""
    target = target_from_toml_text(target_text(spm="256KiB"))
    model = make_model([mk("Relu", ["x"], ["r"], name="relu"),
                        mk("Conv", ["r", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                       {"x": (1, 8, 48, 48)}, ["y"], {"w": (64, 8, 3, 3), "b": (64,)})
    graph = load(model)
    tiled = tile_graph(graph, target)
    assert not tiles_of(tiled, "relu") and tiles_of(tiled, "conv")
    regions = [n for n in tiled.nodes if is_alias(n) and n.op_type == "Region"]
    assert regions
    for region in regions:
        producer = region.inputs[0].producer
        assert producer is None or is_alias(producer), region
    staged = [n for n in tiled.nodes if is_alias(n) and n.op_type == "Assemble" and len(n.inputs) == 1]
    assert [n.inputs[0].name for n in staged] == ["r"]
    assert_same_outputs(graph, tiled)


def test_a_node_the_fastest_device_holds_whole_is_not_cut_for_a_smaller_one():
    # 800 KB of Relu: the NPU (the faster) holds it whole in 1 MiB; the DSP's 256 KiB would need tiles
    target = target_from_toml_text(target_text(spm="1MiB", dsp="256KiB"))
    graph = load(make_model([mk("Relu", ["x"], ["y"], name="relu")], {"x": (1, 16, 80, 80)}, ["y"], {}))
    assert plan_node(target, graph.nodes[0]) is None


def test_a_grouped_conv_the_npu_has_no_kernel_for_runs_there_whole_as_one_plain_conv_per_group():
    text = target_text(spm="1MiB") + "\n[devices.npu0.limits]\ngrouped_conv = false\n"
    target = target_from_toml_text(text)
    graph = load(make_model([mk("Conv", ["x", "w", "b"], ["y"], name="gconv", group=2, pads=[1, 1, 1, 1])],
                            {"x": (1, 8, 16, 16)}, ["y"], {"w": (12, 4, 3, 3), "b": (12,)}))
    assert target.supports(graph.nodes[0], "npu0")
    # one task, its output written in place by both groups: nothing to tile, nothing assembled in DRAM
    assert not tiles_of(tile_graph(graph, target), "gconv")
    native = target_from_toml_text(target_text(spm="1MiB"))
    launch = target.devices["npu0"].launch_ns
    assert target.cost(graph.nodes[0], "npu0") == pytest.approx(native.cost(graph.nodes[0], "npu0") + launch)
    # too big for the tile budget whole: one tile per group, each a plain convolution
    small = target_from_toml_text(target_text(spm="16KiB") + "\n[devices.npu0.limits]\ngrouped_conv = false\n")
    tiled = tile_graph(graph, small)
    tiles = tiles_of(tiled, "gconv")
    assert len(tiles) >= 2 and all(int(t.attrs.get("group", 1)) == 1 for t in tiles)
    assert "grouped_conv = false" in tiles[0].tile.why
    assert_same_outputs(graph, tiled)


def _grouped_after_relu(channels: int, hw: int):
    """Relu -> grouped Conv (group 2): the conv's input is an activation some node produced."""
    return load(make_model([mk("Relu", ["x"], ["r"], name="relu"),
                            mk("Conv", ["r", "w", "b"], ["y"], name="gconv", group=2, pads=[1, 1, 1, 1])],
                           {"x": (1, channels, hw, hw)}, ["y"],
                           {"w": (2 * channels, channels // 2, 3, 3), "b": (2 * channels,)}))


def test_a_grouped_conv_that_fits_whole_stays_whole_on_one_core_and_is_shared_by_several():
    target = target_from_toml_text(target_text(spm="1MiB") + "\n[devices.npu0.limits]\ngrouped_conv = false\n")
    graph = _grouped_after_relu(8, 16)
    assert not tiles_of(tile_graph(graph, target), "gconv")
    # two cores that run it as plain convolutions: one tile per group, for them to share; cut for want of a
    # kernel, not of room, so no copy of the Relu's output goes to DRAM for the tiles
    two = target_from_toml_text(target_text(spm="1MiB", cores=2) + "".join(
        f"\n[devices.npu{k}.limits]\ngrouped_conv = false\n" for k in range(2)))
    tiled = tile_graph(graph, two)
    tiles = tiles_of(tiled, "gconv")
    assert len(tiles) == 2 and "2 cores share its groups" in tiles[0].tile.why
    assert not [n for n in tiled.nodes if n.name.endswith("/to_dram")]
    assert_same_outputs(graph, tiled)


def test_a_grouped_conv_too_big_to_hold_whole_stages_its_input_through_dram():
    target = target_from_toml_text(target_text(spm="256KiB") + "\n[devices.npu0.limits]\ngrouped_conv = false\n")
    graph = _grouped_after_relu(16, 24)   # 147 KB in, 74 KB out: over a third of 256 KiB whole, a group fits
    assert working_set_bytes(graph.nodes[1], 64) > 256 * 1024 // 3
    tiled = tile_graph(graph, target)
    assert tiles_of(tiled, "gconv") and [n for n in tiled.nodes if n.name.endswith("/to_dram")]
    assert_same_outputs(graph, tiled)


def test_groups_are_cut_into_row_bands_when_an_idle_cpu_can_take_some():
    # a CPU 80% as fast as the NPU: bands of each group over both beat the node whole on the NPU, even with its
    # output going to DRAM and back (the whole node leaves it in the scratchpad)
    text = (target_text(spm="4MiB").replace("peak = { float32 = 20.0 }", "peak = { float32 = 160.0 }")
            + "\n[devices.npu0.limits]\ngrouped_conv = false\n")
    target = target_from_toml_text(text)
    graph = _grouped_after_relu(32, 48)
    tiled = tile_graph(graph, target)
    tiles = tiles_of(tiled, "gconv")
    assert tiles[0].tile.axis == "channels x rows" and len(tiles) > 2
    assert "spread over npu0, cpu" in tiles[0].tile.why
    assert all(int(t.attrs.get("group", 1)) == 1 for t in tiles)
    assert_same_outputs(graph, tiled)
    # with a CPU a fortieth as fast as the NPU, the node stays whole on the NPU
    slow = target_from_toml_text(text.replace("peak = { float32 = 160.0 }", "peak = { float32 = 5.0 }"))
    assert not tiles_of(tile_graph(graph, slow), "gconv")


def test_a_predicated_expert_that_fits_stays_whole_on_several_cores() -> None:
    """multi-npu splits a node that fits across its cores when the estimate says so, but not a mixture's
    predicated expert: the chosen experts already run side by side, and each part would need the gate."""
    from qdq_helpers import make_models
    graph = load(make_models().moe(1, 8, 2, name="moe8"))
    experts = [n for n in graph.nodes if n.when is not None]
    assert len(experts) >= 8
    target = load_target("multi-npu")
    tiled = tile_graph(graph, target)
    assert not any(n.tile is not None and n.when is not None for n in tiled.nodes)
    dense = load(make_models().moe(1, 2, None, name="dense2"))   # the same MatMuls, not predicated: split
    assert any(n.tile is not None for n in tile_graph(dense, target).nodes)
