"""The Llama-style decoder pair (models/llama_prefill.onnx, models/llama_decode.onnx): the two graphs share
their weights and compute one model (decoding token 129 against the prefill's cache gives what a 129-token
prefill gives); the passes turn every RMSNorm and attention into one node; both build, simulate and validate
on every preset; on edge-soc no node of the attention, the norms or the MLP runs on the CPU in decode."""
from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import MODELS_DIR, REPO
from hetc.frontend import load_onnx
from hetc.ir.fused import node_label
from hetc.target.ops import is_view
from hetc.passes import optimize

sys.path.insert(0, str(REPO / "tools"))
import make_models  # noqa: E402

PROMPT, CACHE = make_models.LLAMA["prompt"], make_models.LLAMA["cache"]


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def test_prefill_and_decode_share_every_weight() -> None:
    prefill, decode = (onnx.load(str(MODELS_DIR / f"llama_{g}.onnx")) for g in ("prefill", "decode"))
    named = [{t.name: numpy_helper.to_array(t) for t in m.graph.initializer if "." in t.name or t.name in
              ("embed", "lm_head", "final_norm")} for m in (prefill, decode)]
    assert named[0].keys() == named[1].keys() and len(named[0]) == 4 * 9 + 3
    assert all(np.array_equal(named[0][k], named[1][k]) for k in named[0])


def test_decoding_against_the_cache_continues_the_prefill() -> None:
    """The decode graph at position 512, fed the cache a 512-token prefill of the same weights made, gives the
    logits a 513-token prefill gives for its last token."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 512, (1, CACHE + 1)).astype(np.int64)
    long_prefill = make_models._llama("llama_long", CACHE + 1, 0)
    cache_prefill = make_models._llama("llama_cache", CACHE, 0)
    full = _session(long_prefill).run(None, {"input_ids": ids})
    cached = _session(cache_prefill).run(None, {"input_ids": ids[:, :CACHE]})
    names = [o.name for o in cache_prefill.graph.output]
    feeds = {"input_ids": ids[:, CACHE:]}
    feeds |= {n.replace("present", "past"): a for n, a in zip(names, cached) if n.startswith("present")}
    step = _session(str(MODELS_DIR / "llama_decode.onnx")).run(None, feeds)
    np.testing.assert_allclose(step[0][0, 0], full[0][0, -1], rtol=1e-4, atol=1e-4)
    assert np.abs(step[0]).std() > 0.1   # realistic weights: logits spread, not a constant


@pytest.mark.parametrize("graph", ["prefill", "decode"])
def test_every_norm_and_attention_becomes_one_node(graph: str) -> None:
    optimized = optimize(load_onnx(MODELS_DIR / f"llama_{graph}.onnx"))
    labels = [node_label(n) for n in optimized.nodes]
    assert labels.count("Attention") == 4
    assert sum(label.startswith("RMSNormalization") for label in labels) == 9
    assert not {"Softmax", "ReduceMean", "Pow", "Sqrt", "Reciprocal", "Expand", "Unsqueeze"} & set(labels)
    assert labels.count("MatMul+SiLU") == 4   # the SwiGLU gate's x * Sigmoid(x)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["edge-soc", "cpu-only", "multi-npu"])
@pytest.mark.parametrize("graph", ["prefill", "decode"])
def test_llama_builds_simulates_and_validates(graph: str, target: str) -> None:
    from hetc.api import validate
    result = validate(MODELS_DIR / f"llama_{graph}.onnx", target=target)
    assert result.validation.passed


def test_decode_on_edge_soc_keeps_attention_norms_and_mlp_off_the_cpu() -> None:
    from hetc.api import validate
    result = validate(MODELS_DIR / "llama_decode.onnx", target="edge-soc")
    assert result.validation.passed
    placement = result.plan.schedule.placement
    # a view runs no kernel anywhere (its bytes are aliased): where it sits only says which memory names them
    on_cpu = {node_label(n) for n in result.graph.nodes if placement.get(n.id) == "cpu" and not is_view(n)}
    assert on_cpu <= {"Gather"}, on_cpu   # at most the embedding lookup, whose table is cheaper to read in place
    assert all(result.target.cost(n, "cpu") == 0 for n in result.graph.nodes if is_view(n))
