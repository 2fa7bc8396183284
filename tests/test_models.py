"""The committed model zoo: valid, small, runnable, semantically what it claims, and reproducible."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import MODELS_DIR, REPO

MB = 1 << 20
# The documented contract of each model (models/README.md): input shapes, output shapes, size limit.
ZOO: dict[str, tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]], int]] = {
    "tiny_cnn": ({"x": (1, 3, 32, 32)}, {"logits": (1, 10)}, 1 * MB),
    "mobilenet_v2": ({"x": (1, 3, 96, 96)}, {"logits": (1, 100)}, 5 * MB),
    "gpt_decoder": (
        {"input_ids": (1, 8)} | {f"past_{kv}_{i}": (1, 4, 24, 32) for i in range(4) for kv in ("key", "value")},
        {"logits": (1, 8, 512)} | {f"present_{kv}_{i}": (1, 4, 32, 32) for i in range(4) for kv in ("key", "value")},
        5 * MB),
    "moe": ({"x": (16, 64)}, {"y": (16, 64)}, 5 * MB),
    "unet": ({"x": (1, 3, 64, 64)}, {"y": (1, 2, 64, 64)}, 5 * MB),
    "llama_prefill": ({"input_ids": (1, 128)},
                      {"logits": (1, 128, 512)} | {f"present_{kv}_{i}": (1, 2, 128, 32) for i in range(4)
                                                   for kv in ("key", "value")}, 5 * MB),
    "llama_decode": ({"input_ids": (1, 1)} | {f"past_{kv}_{i}": (1, 2, 512, 32) for i in range(4)
                                              for kv in ("key", "value")},
                     {"logits": (1, 1, 512)} | {f"present_{kv}_{i}": (1, 2, 513, 32) for i in range(4)
                                                for kv in ("key", "value")}, 5 * MB),
}
VOCAB = 512


def _path(name: str) -> Path:
    return MODELS_DIR / f"{name}.onnx"


def _random_feeds(session: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        if arg.type == "tensor(int64)":
            feeds[arg.name] = rng.integers(0, VOCAB, arg.shape).astype(np.int64)
        else:
            feeds[arg.name] = rng.standard_normal(arg.shape).astype(np.float32)
    return feeds


def _run(name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(_path(name)), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_is_valid_and_small(name: str) -> None:
    path = _path(name)
    assert path.is_file(), f"{path} missing: run python tools/make_models.py"
    assert path.stat().st_size < ZOO[name][2]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 9
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17)}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_runs_with_documented_shapes(name: str) -> None:
    inputs, outputs, _ = ZOO[name]
    session = ort.InferenceSession(str(_path(name)), providers=["CPUExecutionProvider"])
    assert {i.name: tuple(i.shape) for i in session.get_inputs()} == inputs
    results = _run(name, _random_feeds(session))
    assert {k: v.shape for k, v in results.items()} == outputs
    for out_name, value in results.items():
        assert np.isfinite(value).all(), f"{name}:{out_name} has non-finite values"
        assert value.std() > 1e-3, f"{name}:{out_name} is constant: dead weights?"


def test_gpt_cache_and_causality() -> None:
    session = ort.InferenceSession(str(_path("gpt_decoder")), providers=["CPUExecutionProvider"])
    feeds = _random_feeds(session)
    base = _run("gpt_decoder", feeds)
    # present = Concat(past, new) along the sequence axis
    np.testing.assert_array_equal(base["present_key_0"][:, :, :24], feeds["past_key_0"])
    np.testing.assert_array_equal(base["present_value_3"][:, :, :24], feeds["past_value_3"])
    # changing the last new token must not change the logits of the tokens before it
    changed = dict(feeds, input_ids=feeds["input_ids"].copy())
    changed["input_ids"][0, -1] = (changed["input_ids"][0, -1] + 1) % VOCAB
    after = _run("gpt_decoder", changed)
    np.testing.assert_allclose(after["logits"][:, :-1], base["logits"][:, :-1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(after["logits"][:, -1], base["logits"][:, -1])


def _matmul_weights(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(weight, bias) of each MatMul in graph order; the bias is the constant of a directly following Add."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = list(model.graph.node)
    pairs = []
    for node in nodes:
        if node.op_type == "MatMul":
            add = next((n for n in nodes if n.op_type == "Add" and node.output[0] in n.input), None)
            bias = consts.get(add.input[1]) if add is not None else None
            pairs.append((consts[node.input[1]], bias))
    return pairs


def test_moe_matches_top2_reference() -> None:
    model = onnx.load(str(_path("moe")))
    (router, _), *layers = _matmul_weights(model)
    x = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    logits = x @ router
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top2 = np.argsort(-probs, axis=-1)[:, :2]
    gates = np.zeros_like(probs)
    np.put_along_axis(gates, top2, np.take_along_axis(probs, top2, -1), -1)
    gates /= gates.sum(-1, keepdims=True)
    expected = x.copy()
    for e in range(4):
        (w1, b1), (w2, b2) = layers[2 * e], layers[2 * e + 1]
        expected += gates[:, e:e + 1] * (np.maximum(x @ w1 + b1, 0) @ w2 + b2)
    np.testing.assert_allclose(_run("moe", {"x": x})["y"], expected, rtol=1e-4, atol=1e-4)
    assert (np.count_nonzero(gates, axis=1) == 2).all()


def test_generator_is_byte_identical(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "tools" / "make_models.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ZOO:
        assert (tmp_path / f"{name}.onnx").read_bytes() == _path(name).read_bytes(), \
            f"{name}.onnx differs from a fresh build: re-run python tools/make_models.py and commit"


def test_big_transformer_on_demand(tmp_path: Path) -> None:
    """``--big`` writes the scheduler benchmark's 24-layer encoder outside the repo, and it runs."""
    subprocess.run([sys.executable, str(REPO / "tools" / "make_models.py"), "--out", str(tmp_path / "zoo"),
                    "--big", "--big-out", str(tmp_path / "big")], check=True, capture_output=True)
    path = tmp_path / "big" / "transformer24.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.node) > 1500
    assert sum(node.op_type == "Softmax" for node in model.graph.node) == 24 * 8  # one per layer and head
    x = np.random.default_rng(2).standard_normal((32, 64)).astype(np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert y.shape == (32, 64) and np.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_imports_and_optimizes_to_the_same_function(name: str) -> None:
    """hetc imports every zoo model with static shapes; the optimised graph still computes the same outputs."""
    from hetc.frontend import load_onnx
    from hetc.ir import to_onnx
    from hetc.passes import optimize

    graph = load_onnx(_path(name))
    optimized = optimize(graph)
    for value in optimized.values.values():
        assert all(isinstance(d, int) and d >= 0 for d in value.shape), f"{name}: {value} is not static"
    assert {v.name: tuple(v.shape) for v in optimized.inputs} == ZOO[name][0]
    assert "BatchNormalization" not in optimized.op_histogram()  # folded into the preceding Conv
    session = ort.InferenceSession(str(_path(name)), providers=["CPUExecutionProvider"])
    feeds = _random_feeds(session)
    rewritten = ort.InferenceSession(to_onnx(optimized).SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in rewritten.get_outputs()], rewritten.run(None, feeds)))
    for out_name, expected in _run(name, feeds).items():
        np.testing.assert_allclose(got[out_name], expected, rtol=1e-4, atol=1e-4, err_msg=f"{name}:{out_name}")


def test_only_the_llama_head_repeats_leave_the_kernel_set() -> None:
    """The zoo is meant to run on the NPU/DSP (MoE's router too: TopK and OneHot have kernels). The Llama
    graphs' Expand repeats K/V heads for grouped-query attention; the passes absorb it into Attention
    (tests/test_llama.py)."""
    from hetc.target.ops import KERNEL_SET

    outside = {name: sorted({n.op_type for n in onnx.load(str(_path(name))).graph.node} - KERNEL_SET)
               for name in ZOO}
    expected = {"llama_prefill": ["Expand"], "llama_decode": ["Expand"]}
    assert outside == {name: expected.get(name, []) for name in ZOO}
