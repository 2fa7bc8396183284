"""Target descriptions: presets, the TOML loader's error messages, routes, and capability reasons."""
from __future__ import annotations

from pathlib import Path

import onnx.defs
import pytest

from hetc.errors import TargetError
from hetc.ir.fused import HETC_COMPOSITES
from hetc.target import (KERNEL_SET, Ok, Reason, list_presets, load_target, parse_size, target_from_toml_text,
                         working_set_bytes)
from hetc.target.ops import CONTRIB_DOMAIN, CONTRIB_KERNEL_SET
from target_helpers import MINI_TOML, conv, node, unary, val

PRESETS = ["cpu-only", "edge-soc", "multi-npu"]


# ------------------------------------------------------------------------------------------------ presets
def test_list_presets_names_every_shipped_preset_with_a_description() -> None:
    presets = dict(list_presets())
    assert sorted(presets) == PRESETS
    assert all(description for description in presets.values())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_embeds_its_source(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert sum(d.kind == "cpu" for d in target.devices.values()) == 1
    reloaded = target_from_toml_text(target.source, f"bundle of {name}")
    assert reloaded.devices == target.devices and reloaded.dmas == target.dmas
    assert reloaded.memories == target.memories and reloaded.staging == target.staging


@pytest.mark.parametrize("name", PRESETS)
def test_preset_ops_are_real_onnx_ops_in_the_kernel_set_or_contrib_kernels(name: str) -> None:
    for device in load_target(name).devices.values():
        if device.kind == "cpu":
            assert device.ops is None
            continue
        standard = {op for op in device.ops if "." not in op}
        contrib = {op.rpartition(".") for op in device.ops - standard}
        assert standard and standard <= KERNEL_SET, standard - KERNEL_SET
        assert all(onnx.defs.has(op) for op in standard - HETC_COMPOSITES)   # (and hetc's own composites)
        assert {(domain, op) for domain, _dot, op in contrib} <= {(CONTRIB_DOMAIN, op) for op in CONTRIB_KERNEL_SET}
        assert {"float32", "float16"} <= device.dtypes  # hetc validates in fp32


@pytest.mark.parametrize("name", PRESETS)
def test_preset_scratchpads_are_a_few_mib_and_every_home_is_routable(name: str) -> None:
    target = load_target(name)
    for memory in target.memories.values():
        if memory.kind != "dram":
            assert 256 * 1024 <= memory.size <= 16 * 2**20
    homes = {target.home(d) for d in target.devices}
    for a in homes | {target.dram}:
        for b in homes | {target.dram}:
            for hop_src, hop_dst in target.route(a, b):
                assert target.engines_between(hop_src, hop_dst)


def test_edge_soc_shape_matches_the_design() -> None:
    target = load_target("edge-soc")
    assert {d.kind for d in target.devices.values()} == {"cpu", "npu", "dsp"}
    assert target.home("cpu") == "dram"
    assert target.route("npu_sram", "dsp_tcm") == [("npu_sram", "dsp_tcm")]
    assert target.route("dram", "dsp_tcm") == [("dram", "dsp_tcm")]
    assert target.transfer_ns(16_000, "dma_npu") == pytest.approx(600 + 1000)


def test_multi_npu_cores_stage_through_l2_and_reach_dram_directly() -> None:
    target = load_target("multi-npu")
    assert target.route("npu0_spm", "npu3_spm") == [("npu0_spm", "l2"), ("l2", "npu3_spm")]
    assert target.route("npu2_spm", "dram") == [("npu2_spm", "dram")]
    assert target.route("dram", "dram") == []


def test_split_outputs_join_in_the_staging_l2_when_they_fit_and_are_not_graph_outputs() -> None:
    multi, edge = load_target("multi-npu"), load_target("edge-soc")
    quarter = multi.memories["l2"].size // 4
    assert multi.join_memory(quarter) == "l2"
    assert multi.join_memory(quarter + 1) == "dram"                       # too big for the shared L2
    assert multi.join_memory(1024, graph_output=True) == "dram"           # the caller reads it in DRAM
    assert edge.join_memory(1024) == "dram"                               # edge-soc stages through DRAM


def test_default_routes_go_through_dram_without_a_direct_link(tmp_path: Path) -> None:
    text = MINI_TOML + '''
[memories.spm2]
size = "1MiB"
bandwidth = 100.0

[[dma]]
name = "dma1"
memories = ["dram", "spm2"]
bandwidth = 8.0
latency_ns = 100
'''
    target = target_from_toml_text(text, "two scratchpads")
    assert target.route("spm", "spm2") == [("spm", "dram"), ("dram", "spm2")]


def test_load_target_accepts_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "mini.toml"
    path.write_text(MINI_TOML)
    target = load_target(path)
    assert target.name == "mini" and target.path == str(path)
    assert target.memories["spm"].size == 2**20 and target.memories["spm"].kind == "sram"
    assert target.priority == ("cpu", "acc")  # default: declaration order


@pytest.mark.parametrize("text, expected", [(4096, 4096), ("8MiB", 8 * 2**20), ("512 KiB", 512 * 1024),
                                            ("4GB", 4 * 10**9), ("1.5MiB", 3 * 2**19), ("64B", 64)])
def test_parse_size(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


# ------------------------------------------------------------------------------------------------ errors
def _load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "target.toml"
    path.write_text(text)
    with pytest.raises(TargetError) as info:
        load_target(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(TargetError, match="unknown target preset 'edge-sco'.*cpu-only, edge-soc, multi-npu"):
        load_target("edge-sco")


def test_missing_file_is_named() -> None:
    with pytest.raises(TargetError, match="'/no/such/target.toml' does not exist"):
        load_target("/no/such/target.toml")


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = _load_error(tmp_path, MINI_TOML.replace('sync_ns = 100', 'sync_ns = = 100'))
    assert "TOML syntax error" in message and "line 3" in message


# (mutation of MINI_TOML, the key the message must name, a fragment of the problem or the fix)
ERROR_CASES = [
    (("sync_ns = 100\n", ""), "'sync_ns'", "is missing"),
    (('memory = "spm"', 'memory = "sram"'), "[devices.acc] key 'memory'", "memory 'sram' is not defined"),
    (("bandwidth = 100.0", "bandwidth = -1.0"), "[memories.spm] key 'bandwidth'", "not positive"),
    (("bandwidth = 8.0", "bandwidth = 0"), "[[dma]] 'dma0' key 'bandwidth'", "not positive"),
    (('size = "1MiB"', 'size = 0'), "[memories.spm] key 'size'", "not positive"),
    (('size = "1MiB"', 'size = "lots"'), "[memories.spm] key 'size'", '"8MiB"'),
    (('ops = ["Conv", "Relu"]', 'ops = ["Conv", "Rellu"]'), "[devices.acc] key 'ops'",
     "'Rellu' is not an ONNX operator"),
    (('ops = ["Conv", "Relu"]', 'ops = ["Conv", "CumSum"]'), "[devices.acc] key 'ops'",
     "'CumSum' has no npu kernel"),
    (('memories = ["dram", "spm"]', 'memories = ["dram", "spn"]'), "[[dma]] 'dma0' key 'memories'",
     "memory 'spn' is not defined"),
    (('kind = "cpu"', 'kind = "dsp"\nops = ["Relu"]\ndtypes = ["float32"]'), "top level key 'devices'",
     "has no CPU"),
    (('memories = ["dram", "spm"]\nbandwidth = 8.0\nlatency_ns = 100',
      'memories = ["dram", "dram2"]\nbandwidth = 8.0\nlatency_ns = 100\n\n[memories.dram2]\nsize = 1024\n'
      'bandwidth = 1.0\nkind = "dram"'),
     "[memories.spm] key 'dma'", "no DMA engine connects scratchpad 'spm' (home of acc)"),
    (('launch_ns = 100\n', 'launch_ns = 100\nlaunch_nss = 3\n'), "[devices.acc] key 'launch_nss'",
     "did you mean 'launch_ns'"),
    (('efficiency = { conv = 0.5, activation = 0.25 }', 'efficiency = { conv = 1.5, activation = 0.25 }'),
     "[devices.acc] key 'efficiency.conv'", "above 1"),
    (('efficiency = { conv = 0.5, activation = 0.25 }', 'efficiency = { conv = 0.5 }'),
     "[devices.acc] key 'efficiency'", "no entry for op class 'activation'"),
    (('peak = { float32 = 100.0 }', 'peak = { float16 = 100.0 }'), "[devices.acc] key 'peak'",
     "dtype 'float32' is listed in dtypes but has no peak rate"),
    (('dtypes = ["float32"]', 'dtypes = ["float33"]'), "[devices.acc] key 'dtypes'", "did you mean 'float32'"),
    (('dtypes = ["float32"]\n', ''), "[devices.acc] key 'dtypes'", "must list its dtypes"),
    (('ops = ["Conv", "Relu"]\n', ''), "[devices.acc] key 'ops'", "must list its ops"),
    (('ops = ["Conv", "Relu"]', 'ops = []'), "[devices.acc] key 'ops'", "the list is empty"),
    (('dtypes = ["float32"]', 'dtypes = ["float32"]\nlimits = { max_kernal = 3 }'),
     "[devices.acc] key 'limits.max_kernal'", "did you mean 'max_kernel'"),
    (('dtypes = ["float32"]', 'dtypes = ["float32"]\nlimits = { max_kernel = "big" }'),
     "[devices.acc] key 'limits.max_kernel'", "expected an integer, got 'big'"),
    (('sync_ns = 100', 'sync_ns = 100\npriority = ["acc", "gpu"]'), "top level key 'priority'",
     "'gpu' is not a device"),
    (('kind = "npu"', 'kind = "gpu"'), "[devices.acc] key 'kind'", "use one of cpu, npu, dsp"),
    (('memory = "dram"', 'memory = "spm"'), "[devices.cpu] key 'memory'", "a CPU must be homed in DRAM"),
    (('sync_ns = 100', 'sync_ns = 100\nstaging = "l3"'), "top level key 'staging'", "memory 'l3' is not defined"),
    (('name = "dma0"', 'name = "acc"'), "[[dma]] 'acc' key 'name'", "also a device name"),
    (('sync_ns = 100', 'sync_ns = -5'), "top level key 'sync_ns'", "negative"),
    (('efficiency = { default = 0.5 }', 'efficiency = { default = 0.5 }\nops = ["Relu"]'),
     "[devices.cpu] key 'ops'", "a CPU runs every op"),
    (('bandwidth = 10.0', 'bandwidth = nan'), "[memories.dram] key 'bandwidth'", "not a finite number"),
    (('launch_ns = 1000', 'launch_ns = "fast"'), "[devices.cpu] key 'launch_ns'", "expected an integer or a number"),
]


@pytest.mark.parametrize("mutation, key, problem", ERROR_CASES, ids=[c[1] + " " + c[2] for c in ERROR_CASES])
def test_loading_error_names_file_key_and_problem(tmp_path: Path, mutation: tuple[str, str], key: str,
                                                  problem: str) -> None:
    old, new = mutation
    assert old in MINI_TOML
    message = _load_error(tmp_path, MINI_TOML.replace(old, new, 1))
    assert key in message and problem in message


def test_the_mini_target_itself_loads() -> None:
    target = target_from_toml_text(MINI_TOML, "mini")
    assert list(target.devices) == ["cpu", "acc"] and target.dmas["dma0"].memories == ("dram", "spm")


def test_unknown_device_in_a_query_is_a_target_error() -> None:
    with pytest.raises(TargetError, match="has no device 'gpu'; its devices are: cpu, npu, dsp"):
        load_target("edge-soc").supports(unary("Relu", (1, 4)), "gpu")
    with pytest.raises(TargetError, match="has no device 'gpu'"):
        load_target("edge-soc").cost(unary("Relu", (1, 4)), "gpu")


# ------------------------------------------------------------------------------------------------ capability
@pytest.fixture(scope="module")
def soc():
    return load_target("edge-soc")


def test_supported_node_is_ok_on_every_capable_device(soc) -> None:
    relu = unary("Relu", (1, 16, 8, 8))
    assert isinstance(soc.supports(relu, "npu"), Ok)
    assert soc.candidates(relu) == ["npu", "dsp", "cpu"]


def test_op_outside_the_device_list(soc) -> None:
    reason = soc.supports(unary("Softplus", (1, 8)), "npu")
    assert isinstance(reason, Reason) and not reason
    assert reason.code == "op" and "Softplus is not in npu's op list" in str(reason)


def test_dtype_refusal_names_dtype_and_tensor(soc) -> None:
    add = node("Add", [val("a", (4,), "int64"), val("b", (4,), "int64")], [val("c", (4,), "int64")])
    reason = soc.supports(add, "dsp")
    assert reason.code == "dtype" and "input 0 'a' is int64" in reason.message and "float32" in reason.message
    assert soc.supports(add, "cpu")


def test_index_parameters_do_not_count_as_data_dtypes(soc) -> None:
    reshape = node("Reshape", [val("x", (1, 8, 4, 4)), val("shape", (2,), "int64", const=True)],
                   [val("y", (1, 128))])
    gather = node("Gather", [val("table", (100, 16)), val("idx", (3,), "int64")], [val("rows", (3, 16))])
    assert soc.supports(reshape, "npu")
    assert soc.supports(gather, "dsp")


def test_conv_attribute_limits(soc) -> None:
    grouped = conv((1, 8, 8, 8), (8, 4, 3, 3), (1, 8, 6, 6), group=2)
    depthwise = conv((1, 8, 8, 8), (8, 1, 3, 3), (1, 8, 6, 6), group=8)
    strided = conv((1, 3, 64, 64), (16, 3, 11, 11), (1, 16, 14, 14), strides=[4, 4])
    dilated = conv((1, 3, 32, 32), (4, 3, 3, 3), (1, 4, 26, 26), dilations=[3, 3])
    volumetric = conv((1, 2, 4, 4, 4), (2, 2, 3, 3, 3), (1, 2, 2, 2, 2))
    # no grouped kernel (grouped_conv = false): one plain convolution per group, a launch each
    assert soc.supports(grouped, "npu")
    plain = conv((1, 4, 8, 8), (4, 4, 3, 3), (1, 4, 6, 6))
    assert soc.cost(grouped, "npu") == pytest.approx(2 * soc.cost(plain, "npu"))
    transposed = node("ConvTranspose", [val("x", (1, 8, 8, 8)), val("w", (8, 4, 3, 3), const=True)],
                      [val("y", (1, 8, 10, 10))], group=2)
    assert soc.supports(transposed, "npu").message == \
        "grouped (group = 2) ConvTranspose is not supported (npu limit grouped_conv = false)"
    assert soc.supports(depthwise, "npu")
    assert "Conv has strides [4, 4] (npu limit max_stride = 3)" in soc.supports(strided, "npu").message
    assert "Conv has dilations [3, 3] (npu limit max_dilation = 2)" in soc.supports(dilated, "npu").message
    reason = soc.supports(volumetric, "npu")
    assert reason.code == "attribute" and "rank 5" in reason.message


def test_auto_pad_kernel_and_ceil_mode_limits() -> None:
    text = MINI_TOML.replace('dtypes = ["float32"]', 'dtypes = ["float32"]\nlimits = { auto_pad = ["NOTSET"], '
                             'max_kernel = 5, ceil_mode = false }')
    text = text.replace('ops = ["Conv", "Relu"]', 'ops = ["Conv", "Relu", "MaxPool"]')
    text = text.replace("activation = 0.25", "activation = 0.25, pool = 0.1")
    target = target_from_toml_text(text, "limits")
    same = conv((1, 2, 8, 8), (2, 2, 3, 3), (1, 2, 8, 8), auto_pad="SAME_UPPER")
    big = conv((1, 2, 8, 8), (2, 2, 7, 7), (1, 2, 2, 2))
    pool = unary("MaxPool", (1, 2, 8, 8), kernel_shape=[2, 2], ceil_mode=1)
    pool.outputs[0].shape = (1, 2, 4, 4)
    assert target.supports(same, "acc").message == \
        "Conv auto_pad 'SAME_UPPER' is not supported (acc supports auto_pad: NOTSET)"
    assert "Conv has kernel [7, 7] (acc limit max_kernel = 5)" in target.supports(big, "acc").message
    assert "ceil_mode = 1" in target.supports(pool, "acc").message
    assert target.supports(conv((1, 2, 8, 8), (2, 2, 3, 3), (1, 2, 6, 6)), "acc")


def test_resize_pad_and_softmax_modes(soc) -> None:
    cubic = node("Resize", [val("x", (1, 3, 8, 8)), None, val("scales", (4,), "float32", const=True)],
                 [val("y", (1, 3, 16, 16))], mode="cubic")
    reflect = node("Pad", [val("x", (1, 3, 8, 8)), val("pads", (8,), "int64", const=True)],
                   [val("y", (1, 3, 10, 10))], mode="reflect")
    assert soc.supports(cubic, "npu").message == \
        "Resize mode 'cubic' is not supported (npu supports resize_modes: nearest, linear)"
    assert "Pad mode 'reflect'" in soc.supports(reflect, "npu").message
    assert soc.supports(reflect, "dsp")
    multi = load_target("multi-npu")
    assert multi.supports(unary("Softmax", (2, 10), axis=-1), "npu1")
    reason = multi.supports(unary("Softmax", (2, 10, 4), axis=1), "npu1")
    assert reason.code == "attribute" and "axis 1" in reason.message


def test_rank_limit(soc) -> None:
    transpose = unary("Transpose", (1, 2, 3, 4, 5), perm=[0, 2, 1, 3, 4])
    reason = soc.supports(transpose, "npu")
    assert reason.code == "attribute" and "has rank 5 (npu limit max_rank = 4)" in reason.message
    assert soc.supports(transpose, "dsp")


def test_subgraphs_and_custom_domains_run_only_on_the_cpu(soc) -> None:
    branch = node("If", [val("cond", (), "bool")], [val("y", (4,))])
    custom = node("FusedGelu", [val("x", (4,))], [val("y", (4,))], domain="com.microsoft")
    assert soc.supports(branch, "dsp").code == "subgraph"
    assert soc.supports(branch, "cpu")
    assert "custom-domain op" in soc.supports(custom, "npu").message
    assert soc.candidates(custom) == ["cpu"]


def test_working_set_larger_than_the_scratchpad(soc) -> None:
    # 1 x 64 x 128 x 128 fp32 = 4 MiB in, 4 MiB out, 147,456 B of weights: 8.14 MiB > 8 MiB of NPU SRAM.
    big = conv((1, 64, 128, 128), (64, 64, 3, 3), (1, 64, 128, 128), pads=[1, 1, 1, 1])
    reason = soc.supports(big, "npu")
    assert reason.code == "working-set"
    assert "8,536,064 bytes" in reason.message and "8,388,608 bytes" in reason.message
    assert "weights 147,456" in reason.message
    assert soc.supports(big, "cpu")


def test_working_set_counts_each_value_once_and_aliases_views() -> None:
    x = val("x", (1000,))
    square = node("Mul", [x, x], [val("y", (1000,))])
    assert working_set_bytes(square) == 8000
    assert working_set_bytes(square, alignment=64) == 2 * 4032
    flatten = node("Flatten", [val("x", (10, 10))], [val("y", (1, 100))])
    assert working_set_bytes(flatten) == 400


def test_json_view_carries_every_table(tmp_path: Path) -> None:
    import json

    from hetc.target import describe_target, target_to_json
    target = load_target("edge-soc")
    data = json.loads(json.dumps(target_to_json(target)))
    assert data["devices"]["cpu"]["ops"] is None and "Conv" in data["devices"]["npu"]["ops"]
    assert data["memories"]["npu_sram"]["size"] == 8 * 2**20
    assert [d["name"] for d in data["dma"]] == list(target.dmas)
    assert data["staging"] == "dram"
    summary = describe_target(target)
    assert "npu_sram" in summary and "8 MiB" in summary and "dma_npu_dsp" in summary


DOCS = Path(__file__).resolve().parent.parent / "docs" / "targets.md"


def test_docs_example_target_loads_and_every_limit_is_documented() -> None:
    import re

    from hetc.target.capability import LIMIT_KEYS
    text = DOCS.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        assert target_from_toml_text(block, "docs/targets.md").devices
    documented = set(re.findall(r"^\| `(\w+)` \| (?:int|bool|list of \w+) \|", text, flags=re.M))
    assert documented == set(LIMIT_KEYS)


def test_no_join_in_a_staging_memory_that_is_not_linked_to_every_home() -> None:
    """A staging L2 that one core has no port to joins nothing: that core's parts could not be written into
    it in one hop."""
    text = load_target("multi-npu").source
    start = text.rindex("[[dma]]", 0, text.index('name = "dma0_l2"'))
    cut = text[:start] + text[text.index("[[dma]]", start + 1):]
    target = target_from_toml_text(cut, "no-l2-dram")
    assert target.staging == "l2" and not target.engines_between("l2", "npu0_spm")
    assert target.join_memory(1024) == "dram"
    assert load_target("multi-npu").join_memory(1024) == "l2"
