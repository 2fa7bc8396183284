"""Attention too big for a scratchpad is cut into tiles that fit (query heads in whole K/V groups, batch, query
rows; a causal band gets its own triangle as a mask) and still computes what the decomposed original does,
through the tiler alone and through a whole build on the simulator."""
from __future__ import annotations

import numpy as np
import pytest

from hetc.frontend import import_model
from hetc.passes import optimize
from hetc.target import target_from_toml_text, working_set_bytes
from hetc.target.tiling import TILE_BUDGET_FRACTION, tile_graph

from test_fusion_composites import attention
from tiler_helpers import assert_same_outputs

TARGET = """name = "attn"
description = "one NPU core with a small scratchpad that runs attention"
sync_ns = 500
priority = ["npu", "cpu"]

[memories.dram]
kind = "dram"
size = "1GiB"
bandwidth = 10.0

[memories.spm]
size = "64KiB"
bandwidth = 100.0

[devices.cpu]
kind = "cpu"
memory = "dram"
launch_ns = 50000
peak = { float32 = 5.0 }
efficiency = { default = 0.5 }

[devices.npu]
kind = "npu"
memory = "spm"
launch_ns = 1000
peak = { float32 = 200.0 }
efficiency = { default = 0.5 }
ops = ["Attention"]
dtypes = ["float32"]

[[dma]]
name = "dma"
memories = ["dram", "spm"]
bandwidth = 8.0
latency_ns = 500
"""


def _graph(mask: str):
    return optimize(import_model(attention(np.random.default_rng(11), mask=mask, gqa=True, q_len=256,
                                           kv_len=256)))


@pytest.mark.parametrize("mask", ["causal", "float", "none"])
def test_attention_too_big_for_the_scratchpad_is_cut_into_tiles_that_fit(mask: str) -> None:
    target = target_from_toml_text(TARGET)
    graph = _graph(mask)
    (node,) = graph.nodes
    assert not target.supports(node, "npu")   # Q, K, V and the output: 96 KiB against a 64 KiB scratchpad
    tiled = tile_graph(graph, target)
    tiles = [n for n in tiled.nodes if n.tile is not None]
    assert len(tiles) > 1 and all(n.op_type == "Attention" for n in tiles)
    budget = TILE_BUDGET_FRACTION * target.memories["spm"].size
    assert all(working_set_bytes(n) <= budget and target.supports(n, "npu") for n in tiles)
    if mask == "causal":   # cut along query rows: each band but the first carries its own causal triangle
        assert "query rows" in tiles[0].tile.axis
        assert any(len(n.inputs) == 4 and n.inputs[3].is_const for n in tiles)
    assert_same_outputs(graph, tiled)


def test_a_tiled_causal_attention_builds_and_validates_on_the_simulator() -> None:
    from hetc.api import validate
    model = attention(np.random.default_rng(12), mask="causal", gqa=True, q_len=256, kv_len=256)
    result = validate(model, target=target_from_toml_text(TARGET), scheduler="single:npu")
    assert result.validation.passed
    kernels = [ins.kernel for p in result.bundle.programs.values() for ins in p.instructions
               if ins.kind == "compute"]
    assert len(kernels) > 1 and set(kernels) == {"npu.Attention"}
